"""What a history source yields (tickets in pages, with a cursor to resume from) and the label mapping."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# The trainer reads these columns as text, never as labels (models/data.py TEXT_COLUMNS).
TEXT_COLUMNS = frozenset({"id", "subject", "body", "reply", "language", "title", "description"})
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,99}$")


class HistoryError(Exception):
    """An import that cannot start or go on, with a message saying what to do."""


@dataclass(frozen=True)
class HistoryTicket:
    """One resolved ticket as the source read it: text, label values, the first agent reply."""

    key: str
    subject: str
    body: str
    labels: dict[str, str] = field(default_factory=dict)
    reply: str | None = None
    reply_author: str | None = None  # who wrote the reply (name or user name), for the summary
    resolved_at: str = ""
    skip: str | None = None  # a reason the source already knows (e.g. closed as a duplicate)


@dataclass(frozen=True)
class Page:
    """One page of tickets; `cursor` fetches this page again, `next_cursor` the one after it."""

    tickets: list[HistoryTicket]
    cursor: dict[str, Any] | None
    next_cursor: dict[str, Any]
    done: bool


class HistorySource(Protocol):
    """A ticket system's resolved tickets, in a stable order, page by page."""

    name: str
    plan: dict[str, Any]

    def total(self) -> int | None:
        """How many tickets the query matches (approximate), or None when the system cannot say."""
        ...

    def pages(self, cursor: dict[str, Any] | None) -> Iterator[Page]:
        """Pages from `cursor` (None: the start) to the end of the query."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def parse_labels(specs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`NAME=FIELD` options -> {name: field}, refusing names the trainer reads as text and malformed pairs."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, source_field = (part.strip() for part in spec.partition("="))
        if not sep or not name or not source_field:
            raise HistoryError(f"--label {spec!r}: expected NAME=FIELD, e.g. queue=components")
        if not _NAME.match(name):
            raise HistoryError(f"--label {spec!r}: NAME must be a letter then letters, digits or _ (40 at most)")
        if name in TEXT_COLUMNS:
            raise HistoryError(f"--label {spec!r}: {name!r} is a text column of the training file, not a label")
        if not _FIELD.match(source_field):
            raise HistoryError(f"--label {spec!r}: FIELD must be a field id such as components or customfield_10010")
        if name in out:
            raise HistoryError(f"--label {spec!r}: {name!r} is given twice")
        out[name] = source_field
    return out


def first_value(value: Any) -> str | None:
    """A field's value as one label: select {value}, named object {name}, the first of a list, or a string."""
    if isinstance(value, list):
        value = next((v for v in value if v not in (None, "")), None)
    if isinstance(value, dict):
        for key in ("value", "name", "key", "displayName"):
            if isinstance(value.get(key), str | int) and str(value[key]).strip():
                return str(value[key]).strip()
        return None
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def inverse(mapping: Mapping[str, str]) -> dict[str, str]:
    """label -> system value maps read backwards (case-insensitive), so imported labels are the ones written back."""
    return {str(v).lower(): k for k, v in mapping.items()}
