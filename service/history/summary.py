"""The import's counts: read / written / skipped by reason, label distribution, languages, what was redacted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SKIP_REASONS = {
    "duplicate": "the same ticket twice (paging overlap, a ticket updated mid-import, a resumed search)",
    "refiling": "the same text as an earlier ticket (the customer filed it again)",
    "closed_as_duplicate": "resolved as a duplicate of another ticket (Jira resolution / ServiceNow close code)",
    "no_text": "neither a subject nor a description",
    "no_label": "none of the label fields set",
}


@dataclass
class Summary:
    """Counters of one import, carried across resumed runs in the checkpoint."""

    read: int = 0
    written: int = 0
    replies: int = 0
    truncated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    labels: dict[str, Counter[str]] = field(default_factory=dict)
    languages: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    reply_authors: Counter[str] = field(default_factory=Counter)
    first_resolved: str = ""
    last_resolved: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the checkpoint keeps it)."""
        return {
            "read": self.read,
            "written": self.written,
            "replies": self.replies,
            "truncated": self.truncated,
            "skipped": dict(self.skipped),
            "labels": {name: dict(c) for name, c in self.labels.items()},
            "languages": dict(self.languages),
            "redactions": dict(self.redactions),
            "flags": dict(self.flags),
            "reply_authors": dict(self.reply_authors),
            "first_resolved": self.first_resolved,
            "last_resolved": self.last_resolved,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        """Counters saved by to_dict."""
        return cls(
            read=int(data.get("read", 0)),
            written=int(data.get("written", 0)),
            replies=int(data.get("replies", 0)),
            truncated=int(data.get("truncated", 0)),
            skipped=Counter(data.get("skipped") or {}),
            labels={name: Counter(c) for name, c in (data.get("labels") or {}).items()},
            languages=Counter(data.get("languages") or {}),
            redactions=Counter(data.get("redactions") or {}),
            flags=Counter(data.get("flags") or {}),
            reply_authors=Counter(data.get("reply_authors") or {}),
            first_resolved=str(data.get("first_resolved") or ""),
            last_resolved=str(data.get("last_resolved") or ""),
        )

    @property
    def skipped_total(self) -> int:
        """Tickets read but not written."""
        return sum(self.skipped.values())

    def render(self, label_sources: dict[str, str], *, top: int = 8) -> list[str]:
        """Lines for the operator: what was read and written, why tickets were skipped, what the labels look like."""
        lines = [f"read {self.read:,} · written {self.written:,} · skipped {self.skipped_total:,}"]
        for reason, n in self.skipped.most_common():
            lines.append(f"  {reason} {n:,}: {SKIP_REASONS.get(reason, reason)}")
        if self.written:
            lines.append(f"replies: {self.replies:,} of {self.written:,} tickets have a first agent reply")
        if self.reply_authors:
            lines.append(
                f"reply authors: {_counts(self.reply_authors, 5)} "
                "(an automation account among them? re-run with --overwrite --skip-author NAME)"
            )
        if self.first_resolved:
            lines.append(f"resolved between {self.first_resolved[:10]} and {self.last_resolved[:10]}")
        for name, source_field in label_sources.items():
            counts = self.labels.get(name, Counter())
            missing = self.written - sum(counts.values())
            head = f"label {name} (from {source_field}): {len(counts)} values"
            if missing:
                head += f", missing on {missing:,}"
            lines.append(head + (f": {_counts(counts, top)}" if counts else ""))
            if self.written and len(counts) < 2:
                lines.append(f"  warning: {name} needs at least two values to train; check --label {name}=FIELD")
        if self.languages:
            lines.append(f"languages: {_counts(self.languages, top)}")
        if self.redactions:
            lines.append(f"redacted before writing: {_counts(self.redactions)}")
        if self.flags:
            lines.append(f"flagged (kept): {_counts(self.flags)}")
        if self.truncated:
            lines.append(f"descriptions cut to the first characters: {self.truncated:,}")
        return lines


def _counts(counter: Counter[str], top: int | None = None) -> str:
    """`a 3 · b 2 · 4 more` for the most common entries."""
    common = counter.most_common(top)
    text = " · ".join(f"{k or '(none)'} {v:,}" for k, v in common)
    rest = len(counter) - len(common)
    return text + (f" · {rest} more" if rest > 0 else "")
