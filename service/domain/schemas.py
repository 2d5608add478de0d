"""Non-table models: the canonical ticket, normalised events and triage results."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CanonicalTicket(BaseModel):
    """A ticket as every part of the service sees it, whatever system it came from."""

    model_config = ConfigDict(frozen=True)

    source: str
    external_id: str
    external_key: str
    url: str | None = None
    subject: str = ""
    body: str = ""
    body_truncated: bool = False
    reporter: str | None = None
    priority: str | None = None
    category: str | None = None
    labels: list[str] = Field(default_factory=list)
    status: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    source_version: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


class FieldChange(BaseModel):
    """One field a person changed in the ITSM tool (a label correction when it is a predicted field)."""

    field: str
    old: str | None = None
    new: str | None = None


class NormalizedEvent(BaseModel):
    """What a webhook parser extracts from one verified delivery."""

    source: str
    delivery_id: str
    event_type: str
    action: Literal["triage", "update", "ignore"]
    ignore_reason: str | None = None
    actor: str | None = None
    ticket: CanonicalTicket | None = None
    changes: list[FieldChange] = Field(default_factory=list)

    @property
    def business_key(self) -> str:
        """Identity of the ticket version this event describes (dedups redeliveries under new ids)."""
        if self.ticket is None:
            return f"{self.source}:{self.delivery_id}"
        return f"{self.source}:{self.ticket.external_id}:{self.ticket.source_version}:{self.event_type}"


class LabelPrediction(BaseModel):
    """One predicted field: the chosen label, its calibrated probability, and every label's probability."""

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    probabilities: dict[str, float] = Field(default_factory=dict)


class TriageResult(BaseModel):
    """The model's verdict on one ticket, in domain terms (workers map models.Prediction to this)."""

    model_config = ConfigDict(extra="forbid")

    predictions: dict[str, LabelPrediction]
    draft_reply: str | None = None
    flags: list[str] = Field(default_factory=list)
    model_version: str = ""
    adapter_version: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)


class DraftResult(BaseModel):
    """The reply suggested for one triaged ticket (the second stage, after the labels)."""

    draft_reply: str | None = None
    source: str | None = Field(None, description='"model", or "history:<id>" for a past reply')
    flags: list[str] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    grounds: list[str] = Field(
        default_factory=list, description="Texts the draft was built from (the past reply reused or shown)"
    )


class WriteBack(BaseModel):
    """One outbound write to the ITSM tool, built from an outbox row (labels are mapped by the connector)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["triage", "reply", "correction"]
    external_id: str
    external_key: str
    idempotency_key: str
    fields: dict[str, str] = Field(default_factory=dict, description="predicted field -> label to set")
    note: str | None = Field(None, description="internal note (plain text)")
    public_reply: str | None = Field(None, description="customer-visible reply (plain text), only after approval")
    check_existing: bool = Field(False, description="a previous attempt may have written: look for our marker first")
    allowed_links: list[str] = Field(
        default_factory=list, description="links that were in the ticket itself: the only ones kept clickable"
    )


class WriteOutcome(BaseModel):
    """What a connector did for one WriteBack."""

    external_ref: str | None = None
    already_done: bool = False
    written_fields: dict[str, str] = Field(default_factory=dict)
    unmapped_fields: dict[str, str] = Field(default_factory=dict)
