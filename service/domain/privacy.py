"""Erasure bookkeeping: the erasure log the workers follow, and how a reporter is found without keeping the address.

An erasure (``itsm-triage purge``) or a retention purge deletes or blanks rows in one transaction and appends one
`Erasure` row naming the ticket-memory ids it removed. Every triage worker polls this log (workers/memory_sync.py)
and calls its model's ``forget`` for them, so a running worker stops voting with, and suggesting replies from,
erased tickets within one poll; a worker that starts later replays the whole log once, which also reaches an
adapter trained on an export that still held the tickets.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Erasure(SQLModel, table=True):
    """One erasure or retention purge: which ticket-memory ids must be forgotten (no text, no reporter)."""

    __tablename__ = "erasure"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=_utcnow, index=True)
    reason: str = Field(max_length=20, description="request | retention")
    memory_ids: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="ticket-memory ids ('source:external_key') of the erased tickets",
    )
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


def memory_id(source: str, external_key: str) -> str:
    """The id a ticket has in exports and in the ticket memory (service.review.feedback.training_rows)."""
    return f"{source}:{external_key}"


def reporter_digest(identity: str | None) -> str | None:
    """SHA-256 of a normalised e-mail address or account id: finds a reporter's tickets without storing the address."""
    norm = (identity or "").strip().casefold()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest() if norm else None


def text_digest(text: str) -> dict[str, Any]:
    """What an audit row keeps of a free text (draft, reply, reason): enough to match it, nothing to read."""
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "chars": len(text)}
