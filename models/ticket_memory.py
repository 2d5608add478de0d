"""The ticket memory: the training file's tickets (text, labels, the agent's reply), found again by TF-IDF similarity
(word n-grams to find candidates, word + character n-grams to choose among them). Tickets reviewed after training
are added as they are reviewed (`extend`; the worker's workers/memory_sync.py), without refitting anything.

Two uses, both measured on this project's data (MODEL_CARD.md):
- **replies**: the reply an agent wrote to the most similar earlier ticket scores higher against reference replies
  than anything the bundled 135M model drafts (chrF 40.5 vs 28–30), so `reply_mode="retrieve"` suggests that reply
  (in the ticket's language only) and drafts with the LLM only when nothing similar enough exists;
  `reply_mode="generate"` drafts with the LLM and shows it the past reply as an example;
- **neighbour votes** (models/neighbours.py): the labels of the most similar past tickets are a third member of the
  classification ensemble; recurring and re-filed tickets get the label their twin had.

Stored in the adapter directory as gzipped JSON lines (no pickle); the vectorisers are refitted at load (a few seconds
for 5,000 tickets), so the file holds only text. It holds the operator's own past tickets and replies: treat an
adapter with a memory as being as sensitive as the ticket history it came from.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import language as lang
from models import prompts
from models.lexical import CHAR, make_vectorizer

FILE = "tickets.jsonl.gz"
LEGACY_FILE = "replies.jsonl.gz"  # adapters saved before labels were kept: rows with a reply only
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


class TicketMemory:
    """Past ticket rows ({id, text, language, reply?, labels?}) and a TF-IDF index over their texts."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not rows:
            raise ValueError("a ticket memory needs at least one ticket")
        texts = [r["text"] for r in rows]
        self._vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self._set_rows(rows, self._vec.fit_transform(texts))
        # Character n-grams (the lexical partner's block) re-rank the word index's top candidates. Only the
        # vocabulary and idf are kept (fitted on at most _CHAR_FIT_ROWS rows): a stored character matrix would be
        # ~25x the word one.
        sample = texts if len(texts) <= _CHAR_FIT_ROWS else texts[:: -(-len(texts) // _CHAR_FIT_ROWS)]
        self._char = make_vectorizer(CHAR, min_df=2 if len(sample) >= 50 else 1).fit(sample)

    def _set_rows(self, rows: Sequence[dict[str, Any]], matrix: Any) -> None:
        """The rows, their word TF-IDF matrix (one row each) and the masks searches filter on."""
        self.rows, self._matrix = list(rows), matrix
        self._languages = np.array([r.get("language") or "" for r in self.rows])
        self._has_reply = np.array([bool(r.get("reply")) for r in self.rows])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def replies(self) -> int:
        """Rows that carry a reply."""
        return int(self._has_reply.sum())

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        texts: Sequence[str],
        replies: Sequence[str | None],
        labels: Sequence[Mapping[str, str]] | None = None,
    ) -> TicketMemory | None:
        """From training tickets; a row needs text and a reply or a label; None when no row qualifies."""
        rows = _rows(ids, texts, replies, labels)
        return cls(rows) if rows else None

    def extend(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        replies: Sequence[str | None],
        labels: Sequence[Mapping[str, str]] | None = None,
        max_rows: int = 0,
    ) -> int:
        """Add tickets (reviewed after training: corrected labels, sent replies) without refitting the vocabularies;
        a row whose id is already held is replaced and moves to the end (the latest review wins). Beyond `max_rows`
        (0: no bound) the rows at the front go: the training rows first, then the least recently reviewed.
        Returns the rows added or replaced.

        Words the training tickets never used do not count in the word index, but their character n-grams do in the
        re-ranking. Not safe to call while another thread searches this memory (the worker calls it between batches).
        """
        from scipy.sparse import vstack

        new = _rows(ids, texts, replies, labels)
        latest = {r["id"]: r for r in new}  # one row per id: the last one given
        if not latest:
            return 0
        keep = [i for i, r in enumerate(self.rows) if r["id"] not in latest]
        added = list(latest.values())
        if max_rows and len(keep) + len(added) > max_rows:
            added = added[-max_rows:]
            keep = keep[len(keep) - (max_rows - len(added)) :] if max_rows > len(added) else []
        matrix = vstack([self._matrix[keep], self._vec.transform([r["text"] for r in added])]).tocsr()
        self._set_rows([self.rows[i] for i in keep] + added, matrix)
        return len(added)

    def forget(self, ids: Sequence[str]) -> int:
        """Drop the rows of these ticket ids (an erasure request): they stop voting and are never suggested again.
        The vocabularies stay as fitted (they hold words, not tickets). Returns the rows removed."""
        gone = {str(i) for i in ids}
        keep = [i for i, r in enumerate(self.rows) if r["id"] not in gone]
        removed = len(self.rows) - len(keep)
        if removed:
            self._set_rows([self.rows[i] for i in keep], self._matrix[keep])
        return removed

    def save(self, d: Path) -> None:
        """Write the rows (gzipped JSON lines, sorted keys: the same memory gives the same bytes)."""
        (d / LEGACY_FILE).unlink(missing_ok=True)
        with gzip.GzipFile(d / FILE, "wb", mtime=0) as f:
            for r in self.rows:
                f.write((json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n").encode())

    @classmethod
    def load(cls, d: Path) -> TicketMemory | None:
        """The adapter's memory (or the reply-only memory of an older adapter), or None when it has none."""
        for name in (FILE, LEGACY_FILE):
            p = d / name
            if p.exists():
                with gzip.open(p, "rt", encoding="utf-8") as f:
                    return cls([json.loads(line) for line in f if line.strip()])
        return None

    def search(
        self, texts: Sequence[str], k: int, allowed: Sequence[np.ndarray | None] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text, up to k (row indices, similarities), most similar first.

        Similarity is the mean of the word and the character n-gram TF-IDF cosines, computed for the word index's
        top `max(k, _RERANK)` candidates among the rows `allowed[i]` admits (a boolean mask; None: every row).
        """
        if not texts:
            return []
        clipped = [t[:_MATCH_CHARS] for t in texts]
        sims: Any = (self._vec.transform(clipped) @ self._matrix.T).toarray()
        queries = self._char.transform(clipped)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for i, row in enumerate(sims):
            mask = allowed[i] if allowed is not None else None
            if mask is not None:
                row[~mask] = -1.0
            top = np.argsort(-row, kind="stable")[: max(k, _RERANK)]
            top = top[row[top] > 0]
            if not len(top):
                out.append((top, np.zeros(0)))
                continue
            cands = self._char.transform([self.rows[int(j)]["text"] for j in top])
            score = (row[top] + (cands @ queries[i].T).toarray()[:, 0]) / 2
            order = np.argsort(-score, kind="stable")[:k]
            out.append((top[order], score[order]))
        return out

    def nearest(
        self, texts: Sequence[str], languages: Sequence[str | None], *, min_similarity: float
    ) -> list[Match | None]:
        """Per ticket, the reply of the most similar past ticket written in the ticket's language, if similar enough.

        A ticket whose language is unknown only matches replies whose language is unknown too: a reply in the wrong
        language is worse than a drafted one.
        """
        masks = [self._has_reply & (self._languages == (code or "")) for code in languages]
        out: list[Match | None] = []
        for idx, sim in self.search(texts, 1, masks):
            if len(idx) and sim[0] >= min_similarity:
                row = self.rows[int(idx[0])]
                out.append(Match(row["reply"], float(sim[0]), row["id"]))
            else:
                out.append(None)
        return out

    def labels_of(self, field: str) -> list[str | None]:
        """Each row's label for `field` (None where the row has none, e.g. a reply-only memory)."""
        return [(r.get("labels") or {}).get(field) for r in self.rows]


def _rows(
    ids: Sequence[str],
    texts: Sequence[str],
    replies: Sequence[str | None],
    labels: Sequence[Mapping[str, str]] | None,
) -> list[dict[str, Any]]:
    """Memory rows: text cut to what matching reads, the sanitised reply with its language, the non-empty labels."""
    rows = []
    for n, (i, text, reply) in enumerate(zip(ids, texts, replies, strict=True)):
        clean = prompts.sanitize(reply or "")
        labs = {k: v for k, v in (labels[n] if labels is not None else {}).items() if v}
        if not text.strip() or not (clean or labs):
            continue
        row: dict[str, Any] = {"id": str(i), "text": text[:_MATCH_CHARS]}
        if clean:
            row.update(reply=clean, language=lang.detect(clean) or "")
        if labs:
            row["labels"] = labs
        rows.append(row)
    return rows
