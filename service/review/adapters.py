"""The Adapters page (admins): the registry the CLI's `itsm-triage adapters list` shows, with each adapter's gate
figures side by side with the live adapter's and the shadow comparison; promote, shadow, retire and roll back as
CSRF-protected forms (no JavaScript). Every change is audit-logged by the registry with the admin's name."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.domain.tables import Role
from service.learning import registry, views
from service.review.auth import Principal, ReviewError, context, engine_of, require_ui, require_ui_form
from service.review.pages import render

router = APIRouter(prefix="/review/adapters", include_in_schema=False)
Admin = Annotated[Principal, Depends(require_ui(Role.admin))]
AdminForm = Annotated[Principal, Depends(require_ui_form(Role.admin))]
Reason = Annotated[str, Form(max_length=2000)]
# badge colours of the stylesheet, by status
BADGES = {"live": "approved", "shadow": "pending", "candidate": "", "retired": "failed"}
DONE = {"promoted", "shadowing", "retired", "rolled-back"}


@router.get("", response_class=HTMLResponse)
def adapters_page(request: Request, principal: Admin) -> Response:
    """Every adapter, newest first, with its figures and the actions its status allows."""
    return _list(request, principal)


@router.get("/{version}", response_class=HTMLResponse)
def adapter_page(request: Request, version: str, principal: Admin) -> Response:
    """One adapter: the gate's figures per field, new labels, replies, the shadow comparison, the rollback check."""
    try:
        view = views.one(engine_of(request), version)
    except registry.RegistryError as exc:
        raise ReviewError(exc.status, "unknown_adapter", exc.detail) from None
    return render(
        request, "adapter.html", {"principal": principal, "a": view, "badges": BADGES, "done": _done(request)}
    )


@router.post("/{version}/promote")
async def promote(
    request: Request, version: str, principal: AdminForm, override: Annotated[bool, Form()] = False
) -> Response:
    """Make an adapter live (an adapter that did not pass the gate only with 'override the gate')."""
    base = context(request).settings.model.base
    return await _act(
        request,
        principal,
        "promoted",
        lambda: registry.promote(
            engine_of(request), version, actor=principal.username, force=override, base_model=base
        ),
    )


@router.post("/{version}/shadow")
async def shadow(request: Request, version: str, principal: AdminForm) -> Response:
    """Run an adapter in shadow beside the live one."""
    return await _act(
        request,
        principal,
        "shadowing",
        lambda: registry.start_shadow(engine_of(request), version, actor=principal.username, reason="shadow (admin)"),
    )


@router.post("/{version}/retire")
async def retire(request: Request, version: str, principal: AdminForm, reason: Reason = "") -> Response:
    """Turn a candidate or shadow adapter down (a reason is required)."""
    if not reason.strip():
        return _list(request, principal, error="Say why the adapter is retired.", status=422)
    return await _act(
        request,
        principal,
        "retired",
        lambda: registry.retire(engine_of(request), version, actor=principal.username, reason=reason.strip()),
    )


@router.post("/rollback")
async def rollback(request: Request, principal: AdminForm, reason: Reason = "") -> Response:
    """Retire the live adapter and make its predecessor live again (a reason is required)."""
    if not reason.strip():
        return _list(request, principal, error="Say why the live adapter is rolled back.", status=422)
    return await _act(
        request,
        principal,
        "rolled-back",
        lambda: registry.rollback(engine_of(request), actor=principal.username, reason=reason.strip()),
    )


async def _act(request: Request, principal: Principal, done: str, change: object) -> Response:
    try:
        await run_in_threadpool(change)  # type: ignore[arg-type]
    except registry.RegistryError as exc:
        return _list(request, principal, error=exc.detail, status=exc.status)
    return RedirectResponse(f"/review/adapters?done={done}", status_code=303)


def _list(request: Request, principal: Principal, *, error: str | None = None, status: int = 200) -> Response:
    rows = views.rows(engine_of(request))
    live = next((r for r in rows if r.status == "live"), None)
    return render(
        request,
        "adapters.html",
        {
            "principal": principal,
            "rows": rows,
            "live": live,
            "badges": BADGES,
            "error": error,
            "done": _done(request),
            "sync_s": context(request).settings.learning.adapter_sync_s,
        },
        status=status,
    )


def _done(request: Request) -> str | None:
    """Only known outcomes are echoed (a trusted banner must not show arbitrary text)."""
    done = request.query_params.get("done")
    return done if done in DONE else None
