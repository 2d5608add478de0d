"""The review JSON API under /api/v1 (bearer API tokens): the UI's actions for Jira panels and other tools."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import Session

from service.domain.tables import LabelCorrection, Role, User
from service.review import accounts, actions, audit, dashboard, evidence, queries
from service.review.auth import Principal, ReviewError, context, engine_of, require_api
from service.review.schemas import (
    ApproveIn,
    AuditOut,
    AuditPage,
    CorrectIn,
    CorrectionOut,
    CorrectOut,
    DayOut,
    DecisionOut,
    FieldPrediction,
    MeOut,
    PreparingOut,
    QueueOut,
    RejectIn,
    SimilarTicketOut,
    SourceOut,
    StatsOut,
    SuggestionOut,
    SuggestionSummary,
    TicketOut,
    UserOut,
    UserPatch,
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown or expired token, or a disabled account"},
    403: {"description": "The token's role is too weak"},
}
router = APIRouter(prefix="/api/v1", tags=["review"], responses=_ERRORS)
Viewer = Annotated[Principal, Depends(require_api(Role.viewer))]
Agent = Annotated[Principal, Depends(require_api(Role.agent))]
Admin = Annotated[Principal, Depends(require_api(Role.admin))]


@router.get("/me", response_model=MeOut)
def me(principal: Viewer) -> MeOut:
    """Who the token belongs to."""
    return MeOut(username=principal.username, role=principal.role.value)


@router.get("/suggestions", response_model=QueueOut)
def list_suggestions(
    request: Request,
    _principal: Viewer,
    source: str | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected|delivered|failed)$")] = None,
    field: str | None = None,
    value: str | None = None,
    min_conf: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_conf: Annotated[float | None, Query(ge=0, le=1)] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 25,
) -> QueueOut:
    """The review queue, newest first, filtered and paged, with counts per status."""
    filters = queries.QueueFilters(source, status, field, value, min_conf, max_conf)
    with Session(engine_of(request)) as session:
        result = queries.queue(session, filters, page=page, per_page=per_page)
        preparing, preparing_total = queries.preparing(session, filters)
    items = [
        SuggestionSummary(
            id=i.suggestion.id or 0,
            ticket_id=i.ticket.id or 0,
            status=i.suggestion.status,
            version=i.suggestion.version,
            source=i.ticket.source,
            external_key=i.ticket.external_key,
            subject=i.ticket.subject,
            created_at=i.suggestion.created_at,
            labels={k: (v or {}).get("label") for k, v in i.predictions.items()},
        )
        for i in result.items
    ]
    waiting = [
        PreparingOut(
            triage_id=p.triage.id or 0,
            ticket_id=p.ticket.id or 0,
            source=p.ticket.source,
            external_key=p.ticket.external_key,
            subject=p.ticket.subject,
            draft_status=p.triage.draft_status,
            draft_error=p.triage.draft_error if p.triage.draft_status == "failed" else None,
            labels_at=p.triage.created_at,
            labels={k: (v or {}).get("label") for k, v in (p.triage.predictions or {}).items()},
        )
        for p in preparing
    ]
    return QueueOut(
        items=items,
        total=result.total,
        page=page,
        per_page=per_page,
        counts=result.counts,
        preparing=waiting,
        preparing_total=preparing_total,
    )


@router.get("/suggestions/{suggestion_id}", response_model=SuggestionOut, responses={404: {}})
def get_suggestion(request: Request, suggestion_id: int, _principal: Viewer) -> SuggestionOut:
    """One suggestion with its ticket, predictions (with probabilities), corrections and deliveries."""
    with Session(engine_of(request)) as session:
        view = queries.suggestion_view(session, suggestion_id)
        found = evidence.evidence_for_view(session, view, context(request).settings)
    return suggestion_out(view, found)


@router.post("/suggestions/{suggestion_id}/approve", response_model=DecisionOut, responses={404: {}, 409: {}})
def approve(request: Request, suggestion_id: int, body: ApproveIn, principal: Agent) -> DecisionOut:
    """Approve the draft (or an edited reply): the public reply is queued for delivery exactly once."""
    d = actions.approve(
        engine_of(request),
        request.app.state.celery,
        suggestion_id=suggestion_id,
        actor=principal.username,
        version=body.version,
        reply=body.reply,
    )
    return DecisionOut(**d.__dict__)


@router.post("/suggestions/{suggestion_id}/reject", response_model=DecisionOut, responses={404: {}, 409: {}})
def reject(request: Request, suggestion_id: int, body: RejectIn, principal: Agent) -> DecisionOut:
    """Reject the draft with a reason; nothing is sent."""
    d = actions.reject(
        engine_of(request),
        suggestion_id=suggestion_id,
        actor=principal.username,
        version=body.version,
        reason=body.reason,
    )
    return DecisionOut(**d.__dict__)


@router.post("/tickets/{ticket_id}/corrections", response_model=CorrectOut, responses={404: {}})
def correct(request: Request, ticket_id: int, body: CorrectIn, principal: Agent) -> CorrectOut:
    """Correct predicted labels; the new values are written back to the ITSM tool."""
    rows, delivery_id = actions.correct_labels(
        engine_of(request),
        request.app.state.celery,
        ticket_id=ticket_id,
        actor=principal.username,
        fields=body.fields,
    )
    return CorrectOut(corrections=[correction_out(r) for r in rows], delivery_id=delivery_id)


@router.get("/stats", response_model=StatsOut)
def stats(request: Request, _principal: Viewer, days: Annotated[int, Query(ge=1, le=366)] = 30) -> StatsOut:
    """Acceptance rate, edit rate and per-field precision per day."""
    with Session(engine_of(request)) as session:
        result = dashboard.compute(session, days=days, policy=request.app.state.review.settings.policy)
    return StatsOut(days=[day_out(d, result.fields) for d in result.days], total=day_out(result.total, result.fields))


@router.get("/audit", response_model=AuditPage)
def audit_log(
    request: Request,
    _principal: Admin,
    action: str | None = None,
    actor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditPage:
    """The audit log, newest first (admins only)."""
    with Session(engine_of(request)) as session:
        rows, total = audit.list_entries(session, limit=limit, offset=offset, action=action, actor=actor)
    return AuditPage(items=[AuditOut.model_validate(r, from_attributes=True) for r in rows], total=total)


@router.get("/users", response_model=list[UserOut])
def users(request: Request, _principal: Admin) -> list[UserOut]:
    """All review accounts (admins only)."""
    return [user_out(u, n) for u, n in accounts.list_users(engine_of(request))]


@router.patch("/users/{user_id}", response_model=UserOut, responses={404: {}, 409: {}})
def patch_user(request: Request, user_id: int, body: UserPatch, principal: Admin) -> UserOut:
    """Change an account's role or disable it (its sessions and tokens stop at once); admins only."""
    engine = engine_of(request)
    accounts.update_user(engine, actor=principal.username, user_id=user_id, role=body.role, disabled=body.disabled)
    return next(user_out(u, n) for u, n in accounts.list_users(engine) if u.id == user_id)


def user_out(user: User, tokens: int) -> UserOut:
    """API shape of an account."""
    return UserOut(
        id=user.id or 0,
        username=user.username,
        role=user.role,
        disabled=user.disabled,
        sso=user.oidc_subject is not None,
        api_tokens=tokens,
    )


def correction_out(row: LabelCorrection) -> CorrectionOut:
    """API shape of a correction."""
    if row.id is None:
        raise ReviewError(500, "internal", "unsaved correction")
    return CorrectionOut(
        id=row.id,
        field=row.field,
        old_value=row.old_value,
        new_value=row.new_value,
        author=row.author,
        origin=row.origin,
        created_at=row.created_at,
    )


def day_out(d: dashboard.DayStats, fields: list[str]) -> DayOut:
    """API shape of one day's stats."""
    return DayOut(
        day=d.day.isoformat(),
        decided=d.decided,
        sent=d.sent,
        edited=d.edited,
        acceptance_rate=d.acceptance_rate,
        edit_rate=d.edit_rate,
        precision={f: d.precision(f) for f in fields},
        shadow_reviewed={f: n for f in fields if (n := d.shadow_total.get(f, 0))},
        shadow_precision={f: d.shadow_precision(f) for f in fields if d.shadow_total.get(f)},
        source_share=d.source_share,
        acceptance_with_source=d.acceptance_with_source,
        acceptance_without_source=d.acceptance_without_source,
    )


def suggestion_out(view: queries.SuggestionView, found: evidence.Evidence | None = None) -> SuggestionOut:
    """API shape of a suggestion view (with its evidence when given)."""
    s, t, tr = view.suggestion, view.ticket, view.triage
    preds = {}
    for name, p in (tr.predictions or {}).items():
        decision, reason = view.decision(name)
        preds[name] = FieldPrediction(
            label=(p or {}).get("label"),
            confidence=(p or {}).get("confidence"),
            probabilities=(p or {}).get("probabilities") or {},
            decision=decision,
            decision_reason=reason,
            final=view.labels.get(name),
        )
    return SuggestionOut(
        id=s.id or 0,
        status=s.status,
        version=s.version,
        draft=s.draft,
        draft_flags=view.draft_warnings(),
        final_reply=s.final_reply,
        edit_distance=s.edit_distance,
        reviewer=s.reviewer,
        reason=s.reason,
        decided_at=s.decided_at,
        ticket=TicketOut(
            id=t.id or 0,
            source=t.source,
            external_key=t.external_key,
            url=t.url,
            subject=t.subject,
            body=t.body,
            reporter=t.reporter,
            flags=list(t.flags or []),
        ),
        predictions=preds,
        corrections=[correction_out(c) for c in view.corrections],
        deliveries=[
            {
                "id": d.id,
                "kind": d.kind,
                "status": d.status,
                "attempts": d.attempts,
                "created_at": d.created_at.isoformat(),
            }
            for d in view.deliveries
        ],
        similar=[SimilarTicketOut(**t.as_json()) for t in found.similar] if found else [],
        sources=(
            [
                SourceOut(title=c.title, url=c.url, number=c.number, source=c.source, passage=c.passage, score=c.score)
                for c in found.sources
            ]
            if found and s.sources is not None
            else None
        ),
    )
