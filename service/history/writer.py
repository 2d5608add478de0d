"""Tickets -> training rows: scrubbed of secrets and card numbers, duplicates and re-filings collapsed, counted.

A row is exactly what `itsm-triage train` reads: id, subject, body, one column per label, reply, language.
What has been written is remembered as 64-bit digests of ids and normalised texts, 16 bytes a ticket in sorted
arrays (a Python set of ints would take ~150), so 200,000 tickets cost about 3 MiB; a resumed run rebuilds them
from the output file.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import re
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from service.domain.sanitize import scrub
from service.history.records import HistoryTicket
from service.history.summary import Summary

MAX_TEXT_CHARS = 20_000  # the model reads far less; this bounds a row (and memory) against a pasted log file
MAX_LABEL_CHARS = 200
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|aw|wg|tr|sv|vs|rv)\s*:\s*)+", re.I)
_SPACE = re.compile(r"\s+")

DetectLanguage = Callable[[str], str | None]


def digest(text: str) -> int:
    """A 64-bit digest (collisions among 200,000 tickets: about one in a billion)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "big")


def text_key(subject: str, body: str) -> int:
    """The digest of a ticket's text as a re-filing would repeat it: case, spacing and Re:/Fwd: prefixes ignored."""
    normal = _REPLY_PREFIX.sub("", subject).strip() + "\n" + body
    return digest(_SPACE.sub(" ", normal).strip().lower())


class DigestSet:
    """A set of 64-bit digests: a sorted array (8 bytes each) plus a small set of recent ones, merged in bulk."""

    def __init__(self, *, merge_at: int = 8192) -> None:
        self._sorted = array("Q")
        self._recent: set[int] = set()
        self._merge_at = merge_at

    def __contains__(self, digest: object) -> bool:
        if digest in self._recent:
            return True
        i = bisect.bisect_left(self._sorted, digest)  # type: ignore[call-overload]
        return i < len(self._sorted) and self._sorted[i] == digest

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def add(self, digest: int) -> None:
        """Remember one digest (adding one already present changes nothing)."""
        if digest in self:
            return
        self._recent.add(digest)
        if len(self._recent) >= self._merge_at:
            self._sorted = array("Q", heapq.merge(self._sorted, sorted(self._recent)))
            self._recent.clear()


@dataclass
class Seen:
    """Digests of the ids and texts already written."""

    ids: DigestSet = field(default_factory=DigestSet)
    texts: DigestSet = field(default_factory=DigestSet)

    @classmethod
    def from_output(cls, path: Path, upto: int) -> Seen:
        """Rebuild from the first `upto` bytes of an output file (the part a checkpoint vouches for)."""
        seen = cls()
        if upto <= 0:
            return seen
        with path.open("rb") as f:
            done = 0
            for raw in f:
                done += len(raw)
                if done > upto:
                    break
                row = json.loads(raw)
                seen.ids.add(digest(str(row.get("id"))))
                seen.texts.add(text_key(str(row.get("subject") or ""), str(row.get("body") or "")))
        return seen


def _cut(text: str, summary: Summary) -> str:
    """Bound a text column, counting the cut."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    summary.truncated += 1
    return text[:MAX_TEXT_CHARS]


class RowWriter:
    """Writes one JSON line per usable ticket and counts every ticket it is given."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        source: str,
        labels: list[str],
        summary: Summary,
        seen: Seen,
        detect_language: DetectLanguage | None = None,
    ) -> None:
        self._out = out
        self._source = source
        self._labels = labels
        self.summary = summary
        self._seen = seen
        self._detect = detect_language

    def _skip(self, reason: str) -> bool:
        self.summary.skipped[reason] += 1
        return False

    def add(self, ticket: HistoryTicket) -> bool:
        """Write the ticket's row, or count why not; True when written."""
        s = self.summary
        s.read += 1
        if ticket.skip:
            return self._skip(ticket.skip)
        row_id = f"{self._source}:{ticket.key}"
        id_key = digest(row_id)
        if id_key in self._seen.ids:
            return self._skip("duplicate")
        labels = {n: ticket.labels[n][:MAX_LABEL_CHARS] for n in self._labels if ticket.labels.get(n)}
        subject, body = scrub(_cut(ticket.subject, s)), scrub(_cut(ticket.body, s))
        if not subject.text.strip() and not body.text.strip():
            return self._skip("no_text")
        if not labels:
            return self._skip("no_label")
        body_key = text_key(subject.text, body.text)
        if body_key in self._seen.texts:
            return self._skip("refiling")
        reply = scrub(_cut(ticket.reply, s)) if ticket.reply and ticket.reply.strip() else None
        language = self._detect(f"{subject.text}\n{body.text}") if self._detect else None
        row: dict[str, str | None] = {"id": row_id, "subject": subject.text, "body": body.text}
        row.update(labels)
        row["reply"] = reply.text if reply else None
        row["language"] = language
        self._out.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "replace"))
        self._seen.ids.add(id_key)
        self._seen.texts.add(body_key)
        s.written += 1
        s.replies += reply is not None
        if reply is not None and ticket.reply_author:
            # Bounded: the 200 busiest authors are kept, enough to spot an automation account.
            if ticket.reply_author in s.reply_authors or len(s.reply_authors) < 200:
                s.reply_authors[ticket.reply_author] += 1
        for name, value in labels.items():
            s.labels.setdefault(name, Counter())[value] += 1
        s.languages[language or "unknown"] += 1
        for part in (subject, body, reply):
            if part is not None:
                s.redactions.update(part.redactions)
                s.flags.update(f for f in part.flags if f != "contains_secret")
        if ticket.resolved_at:
            s.first_resolved = min(s.first_resolved or ticket.resolved_at, ticket.resolved_at)
            s.last_resolved = max(s.last_resolved, ticket.resolved_at)
        return True
