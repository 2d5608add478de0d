"""The reply memory: past tickets' replies from the training data, found again by TF-IDF similarity.

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

FILE = "replies.jsonl.gz"
# Text of the past ticket kept for matching; the first part of a ticket carries most of what identifies it.
_MATCH_CHARS = 2000


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
        self._vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
        self._matrix = self._vec.fit_transform([r["text"] for r in self.rows])

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

        A ticket whose language is unknown only matches replies whose language is unknown too: a reply in the
        wrong language is worse than a drafted one.
        """
        if not texts:
            return []
        sims: Any = (self._vec.transform([t[:_MATCH_CHARS] for t in texts]) @ self._matrix.T).toarray()
        out: list[Match | None] = []
        for row, code in zip(sims, languages, strict=True):
            row[self._languages != (code or "")] = -1.0
            j = int(row.argmax())
            ok = row[j] >= min_similarity and row[j] > 0
            out.append(Match(self.rows[j]["reply"], float(row[j]), self.rows[j]["id"]) if ok else None)
        return out
