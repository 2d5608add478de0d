"""The review web UI under /review: server-rendered pages and CSRF-protected forms (no JavaScript)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from service.domain.tables import Role
from service.review import accounts, actions, audit, dashboard, evidence, queries
from service.review.auth import Principal, ReviewError, context, engine_of, require_ui, require_ui_form
from service.review.charts import line_chart
from service.review.pages import render

router = APIRouter(prefix="/review", include_in_schema=False)
Viewer = Annotated[Principal, Depends(require_ui(Role.viewer))]
Admin = Annotated[Principal, Depends(require_ui(Role.admin))]
AgentForm = Annotated[Principal, Depends(require_ui_form(Role.agent))]
AdminForm = Annotated[Principal, Depends(require_ui_form(Role.admin))]


@router.get("/", response_class=HTMLResponse)
def queue_page(
    request: Request,
    principal: Viewer,
    source: str | None = None,
    status: str | None = None,
    field: str | None = None,
    value: str | None = None,
    min_conf: str | None = None,
    max_conf: str | None = None,
    page: int = 1,
) -> Response:
    """The queue: suggestions newest first, with filters, counts and paging."""
    if status and status not in queries.STATUSES:
        raise ReviewError(422, "bad_filter", f"Unknown status {status!r}.")
    filters = queries.QueueFilters(
        source or None, status or None, field or None, value or None, _conf(min_conf), _conf(max_conf)
    )
    with Session(engine_of(request)) as session:
        result = queries.queue(session, filters, page=max(1, page))
        preparing, preparing_total = queries.preparing(session, filters)
        fields, srcs = queries.known_fields(session), queries.sources(session)
    query = filters.as_query()
    return render(
        request,
        "queue.html",
        {
            "principal": principal,
            "result": result,
            "preparing": preparing,
            "preparing_total": preparing_total,
            # the page reloads itself while a draft is on its way (no JavaScript: a meta refresh)
            "refresh_s": 10 if any(p.triage.draft_status != "failed" for p in preparing) else None,
            "filters": filters,
            "fields": fields,
            "sources": srcs,
            "statuses": queries.STATUSES,
            "query": query,
            "page_link": lambda p: "/review/?" + urlencode({**query, "page": p}),
            "status_link": lambda s: (
                "/review/?"
                + urlencode({**{k: v for k, v in query.items() if k != "status"}, **({"status": s} if s else {})})
            ),
        },
    )


@router.get("/suggestions/{suggestion_id}", response_class=HTMLResponse)
def suggestion_page(request: Request, suggestion_id: int, principal: Viewer) -> Response:
    """The ticket page: ticket text, predictions with probability bars, the editable draft and the actions."""
    return _suggestion(request, suggestion_id, principal)


def _suggestion(
    request: Request, suggestion_id: int, principal: Principal, *, error: str | None = None, status: int = 200
) -> Response:
    with Session(engine_of(request)) as session:
        view = queries.suggestion_view(session, suggestion_id)
        found = evidence.evidence_for_view(session, view, context(request).settings)
    url = view.ticket.url if (view.ticket.url or "").startswith(("https://", "http://")) else None
    return render(
        request,
        "ticket.html",
        {
            "principal": principal,
            "v": view,
            "ticket_url": url,
            "error": error,
            "can_act": principal.has(Role.agent),
            "evidence": found,
        },
        status=status,
    )


@router.post("/suggestions/{suggestion_id}/approve")
def approve(
    request: Request,
    suggestion_id: int,
    principal: AgentForm,
    version: Annotated[int, Form()],
    reply: Annotated[str, Form(max_length=actions.MAX_REPLY_CHARS)],
) -> Response:
    """Approve (or edit-and-approve) from the ticket page."""
    try:
        actions.approve(
            engine_of(request),
            request.app.state.celery,
            suggestion_id=suggestion_id,
            actor=principal.username,
            version=version,
            reply=reply,
        )
    except ReviewError as exc:
        if exc.status not in (409, 422):
            raise
        return _suggestion(request, suggestion_id, principal, error=exc.detail, status=exc.status)
    return RedirectResponse(f"/review/suggestions/{suggestion_id}?done=approved", status_code=303)


@router.post("/suggestions/{suggestion_id}/reject")
def reject(
    request: Request,
    suggestion_id: int,
    principal: AgentForm,
    version: Annotated[int, Form()],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Reject with a reason from the ticket page."""
    try:
        actions.reject(
            engine_of(request), suggestion_id=suggestion_id, actor=principal.username, version=version, reason=reason
        )
    except ReviewError as exc:
        if exc.status not in (409, 422):
            raise
        return _suggestion(request, suggestion_id, principal, error=exc.detail, status=exc.status)
    return RedirectResponse(f"/review/suggestions/{suggestion_id}?done=rejected", status_code=303)


@router.post("/suggestions/{suggestion_id}/corrections")
async def correct(request: Request, suggestion_id: int, principal: AgentForm) -> Response:
    """Correct labels (form fields `label:<field>`) of the suggestion's ticket."""
    form = await request.form()
    fields = {k.removeprefix("label:"): str(v) for k, v in form.items() if k.startswith("label:") and v}
    ticket_id = await run_in_threadpool(_ticket_of, engine_of(request), suggestion_id)
    try:
        rows, _ = await run_in_threadpool(
            actions.correct_labels,
            engine_of(request),
            request.app.state.celery,
            ticket_id=ticket_id,
            actor=principal.username,
            fields=fields,
        )
    except ReviewError as exc:
        if exc.status != 422:
            raise
        return _suggestion(request, suggestion_id, principal, error=exc.detail, status=exc.status)
    done = "corrected" if rows else "unchanged"
    return RedirectResponse(f"/review/suggestions/{suggestion_id}?done={done}", status_code=303)


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(request: Request, principal: Viewer, days: int = 30) -> Response:
    """Acceptance rate, edit rate and per-field precision over time, as SVG charts; shadow-mode precision."""
    days = min(max(days, 2), 366)
    settings = context(request).settings
    with Session(engine_of(request)) as session:
        stats = dashboard.compute(session, days=days, policy=settings.policy)
    labels = [d.day.isoformat() for d in stats.days]
    rates = line_chart(
        "Acceptance and edit rate",
        labels,
        {"acceptance rate": [d.acceptance_rate for d in stats.days], "edit rate": [d.edit_rate for d in stats.days]},
    )
    precision = line_chart(
        "Precision of predictions vs final values",
        labels,
        {f: [d.precision(f) for d in stats.days] for f in stats.fields},
    )
    return render(
        request,
        "dashboard.html",
        {
            "principal": principal,
            "stats": stats,
            "total": stats.total,
            "rates_chart": rates,
            "precision_chart": precision,
            "days": days,
            "policies": {f: settings.field_policy(f) for f in stats.shadow_fields},
        },
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request, principal: Admin, action: str | None = None, actor: str | None = None, page: int = 1
) -> Response:
    """The audit log (admins only), newest first."""
    page = max(1, page)
    with Session(engine_of(request)) as session:
        rows, total = audit.list_entries(
            session, limit=50, offset=(page - 1) * 50, action=action or None, actor=actor or None
        )
    query = {k: v for k, v in {"action": action, "actor": actor}.items() if v}
    return render(
        request,
        "audit.html",
        {
            "principal": principal,
            "rows": rows,
            "total": total,
            "page": page,
            "pages": max(1, -(-total // 50)),
            "action": action or "",
            "actor": actor or "",
            "page_link": lambda p: "/review/audit?" + urlencode({**query, "page": p}),
        },
    )


def _ticket_of(engine: Engine, suggestion_id: int) -> int:
    with Session(engine) as session:
        return queries.suggestion_view(session, suggestion_id).ticket.id or 0


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, principal: Admin) -> Response:
    """Accounts with their roles (admins only); new accounts come from `itsm-triage users create` or SSO."""
    rows = accounts.list_users(engine_of(request))
    return render(request, "users.html", {"principal": principal, "rows": rows, "roles": [r.value for r in Role]})


@router.post("/users/{user_id}")
def update_user(
    request: Request,
    user_id: int,
    principal: AdminForm,
    role: Annotated[Role, Form()],
    disabled: Annotated[bool, Form()] = False,
) -> Response:
    """Change a role or disable an account from the users page."""
    try:
        accounts.update_user(
            engine_of(request), actor=principal.username, user_id=user_id, role=role, disabled=disabled
        )
    except ReviewError as exc:
        if exc.status != 409:
            raise
        rows = accounts.list_users(engine_of(request))
        ctx = {"principal": principal, "rows": rows, "roles": [r.value for r in Role], "error": exc.detail}
        return render(request, "users.html", ctx, status=409)
    return RedirectResponse("/review/users", status_code=303)


def _conf(raw: str | None) -> float | None:
    """A confidence bound from a form field (percent or fraction); blank or junk means no bound."""
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    if value is None:
        return None
    return max(0.0, min(1.0, value / 100 if value > 1 else value))
