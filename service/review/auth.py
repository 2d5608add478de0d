"""Who is calling: session cookies for the UI, bearer API tokens for /api/v1; roles and CSRF checks."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from service.domain.tables import ApiToken, Role, User
from service.review.security import SessionData, SessionSigner, hash_api_token, verify_password
from service.settings import Settings

COOKIE_NAME = "itsm_review"
CSRF_FIELD = "csrf_token"
ROLE_RANK = {Role.viewer: 0, Role.agent: 1, Role.admin: 2}


class ReviewError(Exception):
    """An expected refusal with status and stable code; rendered as HTML under /review, JSON elsewhere."""

    def __init__(self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


class LoginRequired(ReviewError):
    """A UI request without a valid session: GETs are redirected to the login form."""

    def __init__(self) -> None:
        super().__init__(401, "unauthenticated", "Log in to continue.")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller with the role read from the database on this request."""

    user_id: int
    username: str
    role: Role
    via: str  # "session" or "token"

    def has(self, role: Role) -> bool:
        """True when this principal's role is at least `role`."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


@dataclass
class ReviewContext:
    """Per-app review state (on app.state.review): settings and the cookie signer."""

    settings: Settings
    signer: SessionSigner


def context(request: Request) -> ReviewContext:
    """The review context of the app serving this request."""
    ctx: ReviewContext = request.app.state.review
    return ctx


def engine_of(request: Request) -> Engine:
    """The app's SQLAlchemy engine."""
    engine: Engine = request.app.state.engine
    return engine


def _active_user(session: Session, user_id: int | None) -> User | None:
    if user_id is None:
        return None
    user = session.get(User, user_id)
    return user if user is not None and not user.disabled else None


def authenticate_password(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, else None (timing does not reveal which part failed)."""
    user = session.exec(select(User).where(User.username == username)).first()
    ok = verify_password(password, user.password_hash if user else None)
    return user if ok and user is not None and not user.disabled else None


def session_data(request: Request) -> SessionData | None:
    """The verified session cookie of this request (cached per request)."""
    if not hasattr(request.state, "review_session"):
        request.state.review_session = context(request).signer.loads(request.cookies.get(COOKIE_NAME))
    data: SessionData | None = request.state.review_session
    return data


def ui_principal(request: Request) -> Principal | None:
    """The logged-in, active user of a UI request, or None."""
    data = session_data(request)
    if data is None or data.user_id is None:
        return None
    with Session(engine_of(request)) as session:
        user = _active_user(session, data.user_id)
        if user is None or user.id is None:
            return None
        return Principal(user_id=user.id, username=user.username, role=Role(user.role), via="session")


def api_principal(request: Request) -> Principal:
    """The caller of an /api/v1 request from its bearer token; 401 when missing, unknown, expired or disabled."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="itsm-triage"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise ReviewError(
            401, "unauthenticated", "An API token is required (Authorization: Bearer …).", headers=challenge
        )
    with Session(engine_of(request)) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_api_token(token.strip()))).first()
        if row is None:
            raise ReviewError(401, "invalid_token", "Unknown API token.", headers=challenge)
        if row.expires_at is not None and _aware(row.expires_at) <= datetime.now(UTC):
            raise ReviewError(401, "token_expired", "This API token has expired.", headers=challenge)
        user = _active_user(session, row.user_id)
        if user is None or user.id is None:
            raise ReviewError(401, "account_disabled", "The token's account is disabled.", headers=challenge)
        return Principal(user_id=user.id, username=user.username, role=Role(user.role), via="token")


def require_api(role: Role) -> Callable[[Request], Principal]:
    """Dependency: an API caller with at least `role` (401 unauthenticated, 403 too weak)."""

    def dependency(request: Request) -> Principal:
        principal = api_principal(request)
        _check_role(principal, role)
        return principal

    return dependency


def require_ui(role: Role) -> Callable[[Request], Principal]:
    """Dependency for UI pages (GET): a logged-in user with at least `role`."""

    def dependency(request: Request) -> Principal:
        principal = ui_principal(request)
        if principal is None:
            raise LoginRequired()
        _check_role(principal, role)
        return principal

    return dependency


def require_ui_form(role: Role) -> Callable[[Request], object]:
    """Dependency for UI form POSTs: logged in, then a valid CSRF token, then at least `role`."""

    async def dependency(request: Request) -> Principal:
        principal = await run_in_threadpool(ui_principal, request)
        if principal is None:
            raise LoginRequired()
        await check_csrf(request)
        _check_role(principal, role)
        return principal

    return dependency


async def check_csrf(request: Request) -> None:
    """Refuse a form whose csrf_token is missing or differs from the session's (403)."""
    data = session_data(request)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if data is None or not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), data.csrf.encode()):
        raise ReviewError(403, "csrf_failed", "The form's security token is missing or stale; reload and retry.")


def _check_role(principal: Principal, role: Role) -> None:
    if not principal.has(role):
        raise ReviewError(403, "forbidden", f"This needs the {role.value} role; you are {principal.role.value}.")


def set_session_cookie(response: Response, request: Request, data: SessionData) -> None:
    """Write the signed session cookie: HttpOnly, SameSite=Lax, Secure unless configured off for local HTTP."""
    ctx = context(request)
    response.set_cookie(
        COOKIE_NAME,
        ctx.signer.dumps(data),
        max_age=ctx.signer.max_age_s,
        httponly=True,
        secure=ctx.settings.review.cookie_secure,
        samesite="lax",
        path="/",
    )
    request.state.review_session = data


def ensure_session(request: Request) -> tuple[SessionData, bool]:
    """The current session, or a new anonymous one (so the login form has a CSRF token); True when new."""
    data = session_data(request)
    if data is not None:
        return data, False
    return context(request).signer.new(None), True


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; they are stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
