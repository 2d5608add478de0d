"""Bodies and answers of the review JSON API (/api/v1), as documented in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.domain.tables import Role
from service.review.actions import MAX_REPLY_CHARS


class FieldPrediction(BaseModel):
    """One predicted field: label, confidence, all label probabilities, what the pipeline did with it."""

    label: str | None
    confidence: float | None
    probabilities: dict[str, float] = Field(default_factory=dict)
    decision: str | None = Field(None, description="auto | suggest | shadow | unmapped")
    decision_reason: str | None = Field(None, description="Why the policy decided so (threshold, gate, mode).")
    final: str | None = Field(None, description="The value after corrections (what the ticket finally has).")


class SuggestionSummary(BaseModel):
    """A queue row."""

    id: int
    ticket_id: int
    status: str
    version: int
    source: str
    external_key: str
    subject: str
    created_at: datetime
    labels: dict[str, str | None]


class QueueOut(BaseModel):
    """A page of the queue."""

    items: list[SuggestionSummary]
    total: int
    page: int
    per_page: int
    counts: dict[str, int]


class TicketOut(BaseModel):
    """The ticket as received (plain text; escape before rendering)."""

    id: int
    source: str
    external_key: str
    url: str | None
    subject: str
    body: str
    reporter: str | None
    flags: list[str]


class CorrectionOut(BaseModel):
    """A label correction."""

    id: int
    field: str
    old_value: str | None
    new_value: str | None
    author: str | None
    origin: str
    created_at: datetime


class SuggestionOut(BaseModel):
    """One suggestion with its ticket, predictions and feedback."""

    id: int
    status: str
    version: int
    draft: str
    final_reply: str | None
    edit_distance: int | None
    reviewer: str | None
    reason: str | None
    decided_at: datetime | None
    ticket: TicketOut
    predictions: dict[str, FieldPrediction]
    corrections: list[CorrectionOut]
    deliveries: list[dict[str, Any]]


class ApproveIn(BaseModel):
    """Approve the draft as is, or with `reply` (edit-and-approve). `version` is what you saw (409 if stale)."""

    version: int | None = Field(
        None, ge=0, description="The suggestion version you reviewed; omit to take the current."
    )
    reply: str | None = Field(
        None, max_length=MAX_REPLY_CHARS, description="Edited reply text; omit to send the draft."
    )


class RejectIn(BaseModel):
    """Reject the draft with a reason."""

    version: int | None = Field(None, ge=0)
    reason: str = Field(min_length=1, max_length=2000)


class DecisionOut(BaseModel):
    """The outcome of approve / reject."""

    suggestion_id: int
    status: str
    version: int
    delivery_id: int | None
    edit_distance: int | None


class CorrectIn(BaseModel):
    """Corrected labels, field -> label (labels must be from the field's label set)."""

    fields: dict[str, str] = Field(min_length=1, max_length=20)


class CorrectOut(BaseModel):
    """The corrections recorded and the delivery writing them back (none when nothing changed)."""

    corrections: list[CorrectionOut]
    delivery_id: int | None


class DayOut(BaseModel):
    """One day of review statistics (rates are null without data)."""

    day: str
    decided: int
    sent: int
    edited: int
    acceptance_rate: float | None
    edit_rate: float | None
    precision: dict[str, float | None]


class StatsOut(BaseModel):
    """Dashboard figures."""

    days: list[DayOut]
    total: DayOut


class AuditOut(BaseModel):
    """An audit row."""

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    """A page of the audit log, newest first."""

    items: list[AuditOut]
    total: int


class MeOut(BaseModel):
    """The caller."""

    username: str
    role: str


class UserOut(BaseModel):
    """An account (never its password hash or tokens)."""

    id: int
    username: str
    role: str
    disabled: bool
    sso: bool = Field(description="Provisioned or linked by OIDC single sign-on.")
    api_tokens: int


class UserPatch(BaseModel):
    """Change a role and/or the disabled flag."""

    role: Role | None = None
    disabled: bool | None = None
