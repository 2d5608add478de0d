"""The learning loop's tables: the adapter registry, the adapters' files, shadow predictions and the retrain lease.

An adapter is a versioned artefact of the service (ARCHITECTURE, LLM rules): its files travel as one compressed
archive, stored in the database (`AdapterBlob`) or in a configured directory, named by their SHA-256, and every
worker caches them locally by that hash. `Adapter.status` says what it does: a `candidate` only exists, a `shadow`
predicts beside the live one without acting, the one `live` adapter triages, a `retired` one did before or was
turned down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

_LIVE = text("status = 'live'")
_SHADOW = text("status = 'shadow'")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AdapterStatus(StrEnum):
    """What an adapter does now."""

    candidate = "candidate"  # trained (and gated); waits for shadowing, promotion or an admin
    shadow = "shadow"  # workers predict with it beside the live adapter; its predictions are stored, never used
    live = "live"  # the adapter that triages (exactly one)
    retired = "retired"  # was live and was replaced or rolled back, or was turned down after shadowing


class Adapter(SQLModel, table=True):
    """One adapter in the registry: what it is, what it was trained on, how it did at the gate, what it does now."""

    __tablename__ = "adapter"
    __table_args__ = (
        Index("ix_adapter_status", "status"),
        # at most one live and one shadow adapter, whatever races (partial unique indexes: SQLite and PostgreSQL)
        Index("uq_adapter_one_live", "status", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE),
        Index("uq_adapter_one_shadow", "status", unique=True, sqlite_where=_SHADOW, postgresql_where=_SHADOW),
    )

    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(max_length=40, unique=True, description="v1, v2, ... (what triage rows record)")
    status: str = Field(default=AdapterStatus.candidate, max_length=20)
    base_model: str = Field(max_length=300, description="ITSM_MODEL__BASE it was trained on")
    model_version: str = Field(default="", max_length=300)
    sha256: str = Field(max_length=64, index=True, description="SHA-256 of the files' archive")
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    storage: str = Field(default="db", max_length=10, description="db | dir")
    fields: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False), description="field -> its label set"
    )
    trained_at: datetime | None = None
    data: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="training data: rows, reviewed tickets and their time range, hash, held-out tickets",
    )
    training: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    report: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON), description="the gate's (or the shadow comparison's) figures"
    )
    gate: str | None = Field(default=None, max_length=20, description="passed | failed | None (not gated)")
    reason: str | None = Field(default=None, sa_column=Column(Text), description="why it has its status")
    parent_id: int | None = Field(default=None, foreign_key="adapter.id", description="the live adapter it grew from")
    replaced_id: int | None = Field(
        default=None, foreign_key="adapter.id", description="the live adapter it replaced when it went live"
    )
    promoted_via: str | None = Field(
        default=None, max_length=20, description="bootstrap | gate | shadow | admin | rollback: how it went live"
    )
    live_since: datetime | None = None
    created_at: datetime = Field(default_factory=_utcnow)
    created_by: str = Field(default="", max_length=200)
    status_changed_at: datetime = Field(default_factory=_utcnow)
    status_changed_by: str = Field(default="", max_length=200)


class AdapterBlob(SQLModel, table=True):
    """An adapter's files as one archive (tar.gz), by content hash; several registry rows may share one."""

    __tablename__ = "adapter_blob"

    sha256: str = Field(primary_key=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = Field(default_factory=_utcnow)


class ShadowPrediction(SQLModel, table=True):
    """A shadow adapter's labels for one triaged ticket version, stored beside the live triage (never acted on).

    Rows go with their triage and ticket (ON DELETE CASCADE, and the erasure follows foreign keys)."""

    __tablename__ = "shadow_prediction"
    __table_args__ = (UniqueConstraint("triage_id", "adapter_id", name="uq_shadow_prediction_triage_adapter"),)

    id: int | None = Field(default=None, primary_key=True)
    triage_id: int = Field(sa_column=Column(Integer, ForeignKey("triage.id", ondelete="CASCADE"), nullable=False))
    ticket_id: int = Field(
        sa_column=Column(Integer, ForeignKey("ticket.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    predictions: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="field -> {label, confidence, probabilities}",
    )
    created_at: datetime = Field(default_factory=_utcnow)


class LearningLease(SQLModel, table=True):
    """A named lease (one retrain at a time across CLI and beat; one registry check at a time)."""

    __tablename__ = "learning_lease"

    name: str = Field(primary_key=True, max_length=50)
    holder: str = Field(default="", max_length=200)
    lease_until: datetime | None = None
