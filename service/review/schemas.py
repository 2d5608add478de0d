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


class PreparingOut(BaseModel):
    """A ticket whose labels are stored and whose reply suggestion is still being prepared (or failed)."""

    triage_id: int
    ticket_id: int
    source: str
    external_key: str
    subject: str
    draft_status: str = Field(description="pending (waiting for a draft worker), drafting, or failed")
    draft_error: str | None = None
    labels_at: datetime = Field(description="When the labels were stored")
    labels: dict[str, str | None]


class QueueOut(BaseModel):
    """A page of the queue."""

    items: list[SuggestionSummary]
    total: int
    page: int
    per_page: int
    counts: dict[str, int]
    preparing: list[PreparingOut] = Field(
        default_factory=list, description="Tickets whose draft is on its way (newest first, at most 50); poll again"
    )
    preparing_total: int = 0


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


class SimilarTicketOut(BaseModel):
    """An earlier ticket like this one: its link, final labels and the reply that was sent."""

    ticket_id: int
    source: str
    key: str
    url: str | None
    subject: str
    score: float = Field(description="Text similarity (BM25 on SQLite, ts_rank on PostgreSQL); higher is closer.")
    reviewed: bool = Field(description="A person decided its draft or corrected its labels.")
    resolved: bool
    labels: dict[str, str | None] = Field(description="field -> final value (prediction overridden by corrections)")
    reply: str | None = Field(None, description="The reply sent to that ticket, if one was.")


class SourceOut(BaseModel):
    """A knowledge-base passage the draft was grounded on."""

    title: str
    url: str | None
    number: str
    source: str = Field(description="servicenow | confluence")
    passage: str
    score: float | None = Field(None, description="BM25 score of the passage for this ticket.")


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
    similar: list[SimilarTicketOut] = Field(default_factory=list, description="Up to 3 similar earlier tickets.")
    sources: list[SourceOut] | None = Field(
        None, description="What the draft cites; [] when nothing scored above the threshold, null when not recorded."
    )
    draft_flags: list[str] = Field(
        default_factory=list,
        description="What grounding removed from the draft as unbacked by the ticket or its sources "
        "(unsupported_link, unsupported_email, unsupported_phone, unsupported_code).",
    )


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
    shadow_reviewed: dict[str, int] = Field(
        default_factory=dict, description="field -> reviewed predictions made in shadow mode"
    )
    shadow_precision: dict[str, float | None] = Field(
        default_factory=dict, description="field -> precision of those (raise the field when it is high enough)"
    )
    source_share: float | None = Field(None, description="Share of decided drafts that cite a knowledge-base article.")
    acceptance_with_source: float | None = Field(None, description="Acceptance rate of drafts citing an article.")
    acceptance_without_source: float | None = Field(
        None, description="Acceptance rate of drafts (sources recorded) citing none."
    )


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
