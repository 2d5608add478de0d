"""The reply memory: past tickets' replies from the training data, found again by TF-IDF similarity (word
n-grams to find candidates, word + character n-grams to choose among them).

On this project's data the reply an agent wrote to the most similar earlier ticket scores higher against the
reference replies than anything the bundled 135M model drafts (chrF 40.5 vs 28–30, MODEL_CARD.md), so
`reply_mode="retrieve"` suggests that reply (in the ticket's language only) and drafts with the LLM only when
nothing similar enough exists. `reply_mode="generate"` drafts with the LLM and shows it the past reply as an
example. Stored in the adapter directory as gzipped JSON lines (no pickle); the vectoriser is refitted at load
(about a second for 5,000 tickets), so the file holds only text. It holds the operator's own past replies:
treat an adapter with a memory as being as sensitive as the ticket history it came from.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import language as lang
from models import prompts
from models.lexical import CHAR, make_vectorizer

FILE = "replies.jsonl.gz"
# Text of the past ticket kept for matching; the first part of a ticket carries most of what identifies it.
_MATCH_CHARS = 2000
# Word-index candidates re-ranked with character n-grams (10 recover what scoring every row with both finds,
# chrF within 0.1 on 675 held-out tickets), and the rows the character vocabulary is fitted on (bounds load time).
_RERANK = 10
_CHAR_FIT_ROWS = 5000


@dataclass(frozen=True)
class Match:
    """The past reply found for one ticket."""

    reply: str
    similarity: float
    source_id: str


class ReplyMemory:
    """Past (ticket text, reply, language, id) rows and a TF-IDF index over the ticket texts."""

    def __init__(self, rows: Sequence[dict[str, str]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not rows:
            raise ValueError("a reply memory needs at least one ticket with a reply")
        self.rows = list(rows)
        self._languages = np.array([r.get("language") or "" for r in self.rows])
        texts = [r["text"] for r in self.rows]
        self._vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self._matrix = self._vec.fit_transform(texts)
        # Character n-grams (the lexical partner's block) re-rank the word index's top candidates. Only the
        # vocabulary and idf are kept (fitted on at most _CHAR_FIT_ROWS rows): a stored character matrix would be
        # ~25x the word one.
        sample = texts if len(texts) <= _CHAR_FIT_ROWS else texts[:: -(-len(texts) // _CHAR_FIT_ROWS)]
        self._char = make_vectorizer(CHAR, min_df=2 if len(sample) >= 50 else 1).fit(sample)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], replies: Sequence[str | None]) -> ReplyMemory | None:
        """From training tickets; rows without a reply are skipped; None when no row has one."""
        rows = []
        for i, text, reply in zip(ids, texts, replies, strict=True):
            clean = prompts.sanitize(reply or "")
            if clean and text.strip():
                rows.append(
                    {"id": str(i), "text": text[:_MATCH_CHARS], "reply": clean, "language": lang.detect(clean) or ""}
                )
        return cls(rows) if rows else None

    def save(self, d: Path) -> None:
        """Write the rows (gzipped JSON lines, sorted keys: the same memory gives the same bytes)."""
        with gzip.GzipFile(d / FILE, "wb", mtime=0) as f:
            for r in self.rows:
                f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, d: Path) -> ReplyMemory | None:
        """The adapter's memory, or None when it has none."""
        p = d / FILE
        if not p.exists():
            return None
        with gzip.open(p, "rt", encoding="utf-8") as f:
            return cls([json.loads(line) for line in f if line.strip()])

    def nearest(
        self, texts: Sequence[str], languages: Sequence[str | None], *, min_similarity: float
    ) -> list[Match | None]:
        """Per ticket, the reply of the most similar past ticket written in the ticket's language, if similar enough.

        Similarity is the mean of the word and the character n-gram TF-IDF cosines, computed for the word index's
        top `_RERANK` candidates. A ticket whose language is unknown only matches replies whose language is
        unknown too: a reply in the wrong language is worse than a drafted one.
        """
        if not texts:
            return []
        clipped = [t[:_MATCH_CHARS] for t in texts]
        sims: Any = (self._vec.transform(clipped) @ self._matrix.T).toarray()
        queries = self._char.transform(clipped)
        out: list[Match | None] = []
        for i, (row, code) in enumerate(zip(sims, languages, strict=True)):
            row[self._languages != (code or "")] = -1.0
            top = np.argsort(-row, kind="stable")[:_RERANK]
            top = top[row[top] > 0]
            if not len(top):
                out.append(None)
                continue
            cands = self._char.transform([self.rows[int(j)]["text"] for j in top])
            score = (row[top] + (cands @ queries[i].T).toarray()[:, 0]) / 2
            best = int(score.argmax())
            j, sim = int(top[best]), float(score[best])
            out.append(Match(self.rows[j]["reply"], sim, self.rows[j]["id"]) if sim >= min_similarity else None)
        return out
