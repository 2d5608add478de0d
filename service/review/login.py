"""Password login and logout for the review UI (both forms CSRF-protected, both audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from service.domain.tables import User
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
    if user is None or user.id is None:
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


def _authenticate(engine: Engine, username: str, password: str) -> User | None:
    """The active user for these credentials; the attempt is audited either way."""
    with Session(engine) as session:
        user = authenticate_password(session, username, password)
    if user is None or user.id is None:
        name = username or "-"
        audit.record_now(engine, actor=name, action="login_failed", target_type="user", target_id=name)
        return None
    audit.record_now(
        engine, actor=user.username, action="login", target_type="user", target_id=user.id, after={"via": "password"}
    )
    return user
