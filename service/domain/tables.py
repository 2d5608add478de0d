"""SQLModel tables: the durable state of the service (the broker only ever carries ids of these rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now; stored as UTC."""
    return datetime.now(UTC)


class EventStatus(StrEnum):
    """Lifecycle of an inbound webhook delivery."""

    received = "received"  # committed; not yet (known to be) on the broker
    queued = "queued"  # put on the broker
    processing = "processing"  # claimed by a triage worker (lease_until set)
    triaged = "triaged"  # model output stored
    applied = "applied"  # an update event applied by the API itself (ticket fields, label corrections)
    ignored = "ignored"  # our own echo, stale, a redelivery, or an event type we do not act on
    failed = "failed"  # last attempt failed; will be retried by the sweeper
    dead = "dead"  # gave up after max attempts; visible in metrics and the API


class InboundEvent(SQLModel, table=True):
    """One webhook delivery exactly as received (UNIQUE per source + delivery id)."""

    __tablename__ = "inbound_event"
    __table_args__ = (
        UniqueConstraint("source", "delivery_id", name="uq_inbound_event_source_delivery"),
        Index("ix_inbound_event_status_updated", "status", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)
    delivery_id: str = Field(max_length=200)
    event_type: str = Field(max_length=100)
    business_key: str = Field(max_length=300, index=True, description="source:external_id:version")
    external_id: str | None = Field(default=None, max_length=200)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    status: str = Field(default=EventStatus.received, max_length=20)
    ignored_reason: str | None = Field(default=None, max_length=200)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None


class Ticket(SQLModel, table=True):
    """Canonical ticket, one row per external ticket, updated in place by newer events."""

    __tablename__ = "ticket"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_ticket_source_external"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32)
    external_id: str = Field(max_length=200)
    external_key: str = Field(max_length=200)
    url: str | None = Field(default=None, max_length=2000)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    body_truncated: bool = False
    reporter: str | None = Field(default=None, max_length=300)
    reporter_digest: str | None = Field(
        default=None, max_length=64, index=True, description="sha256 of the reporter's e-mail (erasure look-up)"
    )
    priority: str | None = Field(default=None, max_length=100)
    category: str | None = Field(default=None, max_length=200)
    labels: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    extra: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str | None = Field(default=None, max_length=100)
    source_version: int = Field(
        default=0,
        sa_column=Column(BigInteger, nullable=False),
        description="Jira updated ms / SN sys_mod_count",
    )
    created_at_source: datetime | None = None
    updated_at_source: datetime | None = None
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class LabelCorrection(SQLModel, table=True):
    """A human changed a field we predict (in the ITSM tool or in review): training signal."""

    __tablename__ = "label_correction"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    field: str = Field(max_length=100)
    old_value: str | None = Field(default=None, max_length=300)
    new_value: str | None = Field(default=None, max_length=300)
    author: str | None = Field(default=None, max_length=300)
    origin: str = Field(default="itsm", max_length=20, description="itsm | review")
    event_id: int | None = Field(default=None, foreign_key="inbound_event.id")
    created_at: datetime = Field(default_factory=utcnow)


class DraftStatus(StrEnum):
    """Where a triage's reply suggestion stands: the labels are stored first, the draft follows (workers/drafts.py)."""

    none = "none"  # no draft for this triage (drafting off, an empty ticket, or nothing to suggest)
    pending = "pending"  # waiting for a draft worker
    drafting = "drafting"  # claimed by a draft worker (draft_lease_until set)
    ready = "ready"  # the suggestion is stored
    failed = "failed"  # gave up after max attempts (visible in the review UI and metrics)


class Triage(SQLModel, table=True):
    """The model's output for one ticket version: labels with probabilities, a draft, versions and timings."""

    __tablename__ = "triage"
    __table_args__ = (
        UniqueConstraint("ticket_id", "source_version", name="uq_triage_ticket_version"),
        Index("ix_triage_draft_status", "draft_status", "draft_lease_until"),
        Index("ix_triage_adapter_version", "adapter_version"),  # an adapter's reviewed triages (rollback window)
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    event_id: int | None = Field(default=None, foreign_key="inbound_event.id")
    source_version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    predictions: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="field -> {label, confidence, probs}",
    )
    decisions: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="field -> auto|suggest|shadow|unmapped",
    )
    draft_reply: str | None = Field(default=None, sa_column=Column(Text))
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    model_version: str = Field(default="", max_length=300)
    adapter_version: str | None = Field(default=None, max_length=300)
    timings: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    draft_status: str = Field(default=DraftStatus.none, max_length=20)
    draft_attempts: int = 0
    draft_lease_until: datetime | None = None
    draft_error: str | None = Field(default=None, sa_column=Column(Text))
    draft_ready_at: datetime | None = None


class SuggestionStatus(StrEnum):
    """Lifecycle of a drafted reply under review."""

    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    delivered = "delivered"
    failed = "failed"


class Suggestion(SQLModel, table=True):
    """A drafted reply waiting for an agent; `version` guards concurrent decisions (one wins, the other 409)."""

    __tablename__ = "suggestion"

    id: int | None = Field(default=None, primary_key=True)
    triage_id: int = Field(foreign_key="triage.id", unique=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    status: str = Field(default=SuggestionStatus.pending, max_length=20, index=True)
    draft: str = Field(default="", sa_column=Column(Text, nullable=False))
    final_reply: str | None = Field(default=None, sa_column=Column(Text))
    edit_distance: int | None = None
    reviewer: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    version: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    sources: list[dict[str, Any]] | None = Field(
        default=None,
        sa_column=Column(JSON),
        description="What the draft was grounded on: [{kind, title, url, passage, score, ...}] (None: not recorded)",
    )


class DeliveryKind(StrEnum):
    """What an outbox row writes to the ITSM tool."""

    triage = "triage"  # internal note + auto-applied fields
    reply = "reply"  # the approved public reply
    correction = "correction"  # an agent's label correction from review


class DeliveryStatus(StrEnum):
    """Outbox lifecycle; `unknown` means a write may have happened (look before writing again)."""

    pending = "pending"
    in_flight = "in_flight"
    unknown = "unknown"
    sent = "sent"
    failed = "failed"
    dead = "dead"


class Delivery(SQLModel, table=True):
    """Outbox row written before each outbound call; the idempotency key makes the write exactly-once."""

    __tablename__ = "delivery"
    __table_args__ = (Index("ix_delivery_status_next", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    kind: str = Field(max_length=20)
    idempotency_key: str = Field(max_length=200, unique=True)
    status: str = Field(default=DeliveryStatus.pending, max_length=20)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    external_ref: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Role(StrEnum):
    """Review roles, ordered by power."""

    viewer = "viewer"
    agent = "agent"
    admin = "admin"


class User(SQLModel, table=True):
    """A local review account (password hashed) or one provisioned by OIDC."""

    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=200, unique=True)
    password_hash: str | None = Field(default=None, max_length=500)
    role: str = Field(default=Role.viewer, max_length=20)
    disabled: bool = False
    oidc_subject: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """An API token for /api/v1 (only its hash is stored)."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    token_hash: str = Field(max_length=200, unique=True)
    name: str = Field(default="", max_length=200)
    expires_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None


class AuditEntry(SQLModel, table=True):
    """Append-only record of every state change made by a person or by the service."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=100)
    target_type: str = Field(max_length=50)
    target_id: str = Field(max_length=200)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


# Knowledge-base tables live in their own module; importing it registers them on the same metadata.
from service.domain.knowledge import KbArticle, KbPassage, KbSyncState  # noqa: E402, F401

# The learning loop's tables (adapter registry, adapter files, shadow predictions) likewise.
from service.domain.learning import Adapter, AdapterBlob, LearningLease, ShadowPrediction  # noqa: E402, F401

# The erasure log (privacy) likewise.
from service.domain.privacy import Erasure  # noqa: E402, F401
