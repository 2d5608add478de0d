"""Password login and logout for the review UI (both forms CSRF-protected, both audited)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from service.domain.tables import AuditEntry, User, utcnow
from service.review import audit
from service.review.auth import (
    COOKIE_NAME,
    authenticate_password,
    check_csrf,
    context,
    engine_of,
    set_session_cookie,
    ui_principal,
)
from service.review.pages import render, safe_next

router = APIRouter(prefix="/review", include_in_schema=False)
# Ten wrong passwords for one username within 15 minutes lock password login for it (online guessing).
LOCKOUT_FAILURES = 10
LOCKOUT_WINDOW = timedelta(minutes=15)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The login form (and SSO link when OIDC is configured)."""
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()], next: str = Form("")
) -> Response:
    """Check the password; on success start a fresh session (new CSRF token) and go on."""
    await check_csrf(request)
    # scrypt takes tens of milliseconds and SQLite may wait for its lock: keep both off the event loop.
    user = await run_in_threadpool(_authenticate, engine_of(request), username[:200], password[:1024])
    if isinstance(user, str) or user.id is None:
        if user == "locked":
            error = {"next": safe_next(next), "error": "Too many failed attempts; try again in 15 minutes."}
            return render(request, "login.html", error, status=429)
        error = {"next": safe_next(next), "error": "Invalid username or password."}
        return render(request, "login.html", error, status=401)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, context(request).signer.new(user.id))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (CSRF-protected so another site cannot log agents out)."""
    principal = await run_in_threadpool(ui_principal, request)
    await check_csrf(request)
    if principal is not None:
        await run_in_threadpool(
            audit.record_now,
            engine_of(request),
            actor=principal.username,
            action="logout",
            target_type="user",
            target_id=principal.user_id,
        )
    response = RedirectResponse("/review/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


def _authenticate(engine: Engine, username: str, password: str) -> User | str:
    """The active user for these credentials, else why not ("invalid" or "locked"); audited either way."""
    name = username or "-"
    with Session(engine) as session:
        since = utcnow() - LOCKOUT_WINDOW
        failures = session.exec(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "login_failed", AuditEntry.target_id == name, col(AuditEntry.at) >= since)
        ).one()
        # Past the limit the password is not even checked, so guessing stays throttled while the attack lasts.
        user = authenticate_password(session, username, password) if failures < LOCKOUT_FAILURES else None
    if user is None or user.id is None:
        locked = failures >= LOCKOUT_FAILURES
        audit.record_now(
            engine,
            actor=name,
            action="login_failed",
            target_type="user",
            target_id=name,
            after={"locked": True} if locked else None,
        )
        return "locked" if locked else "invalid"
    audit.record_now(
        engine, actor=user.username, action="login", target_type="user", target_id=user.id, after={"via": "password"}
    )
    return user
