"""Optional OIDC single sign-on (authorization-code flow) for the review UI.

The token and userinfo calls go straight to the issuer over TLS with client authentication, so the user's
identity comes from the provider itself (OIDC Core 3.1.3.7 allows skipping ID-token signature checks then).
New SSO users start as viewers; an admin raises their role (`itsm-triage users set-role`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session, select

from service.domain.tables import Role, User
from service.review import audit
from service.review.auth import ReviewError, context, engine_of, ensure_session, set_session_cookie
from service.review.pages import safe_next
from service.settings import ReviewSettings

router = APIRouter(prefix="/review/oidc", include_in_schema=False)


def _configured(settings: ReviewSettings) -> tuple[str, str, str]:
    if not (settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret):
        raise ReviewError(404, "not_found", "Single sign-on is not configured.")
    return settings.oidc_issuer.rstrip("/"), settings.oidc_client_id, settings.oidc_client_secret.get_secret_value()


def _client(request: Request) -> httpx.AsyncClient:
    # Tests hand in a transport that plays the identity provider; production uses the network.
    transport = getattr(request.app.state, "oidc_transport", None)
    return httpx.AsyncClient(transport=transport, timeout=5.0, follow_redirects=False)


async def _discover(client: httpx.AsyncClient, issuer: str) -> dict[str, Any]:
    resp = await client.get(f"{issuer}/.well-known/openid-configuration")
    resp.raise_for_status()
    doc: dict[str, Any] = resp.json()
    return doc


@router.get("/login")
async def oidc_login(request: Request, next: str = "/review/") -> Response:
    """Redirect to the identity provider with a fresh state and nonce bound to this browser's session."""
    issuer, client_id, _ = _configured(context(request).settings.review)
    async with _client(request) as client:
        doc = await _discover(client, issuer)
    session, _new = ensure_session(request)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    pending = context(request).signer.new(session.user_id, {"oidc_state": state, "next": safe_next(next)})
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": _redirect_uri(request),
        "scope": "openid profile email",
        "state": state,
        "nonce": nonce,
    }
    response = RedirectResponse(f"{doc['authorization_endpoint']}?{urlencode(params)}", status_code=303)
    set_session_cookie(response, request, pending)
    return response


@router.get("/callback")
async def oidc_callback(request: Request, code: str = "", state: str = "") -> Response:
    """Exchange the code, read the user's subject from userinfo, log them in (provisioning a viewer if new)."""
    issuer, client_id, client_secret = _configured(context(request).settings.review)
    session, _new = ensure_session(request)
    expected = str(session.extra.get("oidc_state", ""))
    if not code or not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        raise ReviewError(403, "oidc_state", "The sign-in response does not match this browser's request.")
    async with _client(request) as client:
        doc = await _discover(client, issuer)
        token = await client.post(
            doc["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": _redirect_uri(request),
                "client_id": client_id,
                "client_secret": client_secret,
            },
        )
        if token.status_code != 200 or "access_token" not in token.json():
            raise ReviewError(403, "oidc_token", "The identity provider refused the sign-in.")
        info = await client.get(
            doc["userinfo_endpoint"], headers={"Authorization": f"Bearer {token.json()['access_token']}"}
        )
        info.raise_for_status()
    claims: dict[str, Any] = info.json()
    subject = str(claims.get("sub") or "")
    if not subject:
        raise ReviewError(403, "oidc_subject", "The identity provider sent no subject.")
    user = _user_for(request, subject, str(claims.get("preferred_username") or claims.get("email") or subject))
    if user.disabled or user.id is None:
        raise ReviewError(403, "account_disabled", "This account is disabled.")
    audit.record_now(
        engine_of(request),
        actor=user.username,
        action="login",
        target_type="user",
        target_id=user.id,
        after={"via": "oidc"},
    )
    response = RedirectResponse(str(session.extra.get("next") or "/review/"), status_code=303)
    set_session_cookie(response, request, context(request).signer.new(user.id))
    return response


def _user_for(request: Request, subject: str, preferred: str) -> User:
    """The account linked to this OIDC subject; a new viewer when unknown (never silently linked by name)."""
    engine = engine_of(request)
    with Session(engine) as session:
        user = session.exec(select(User).where(User.oidc_subject == subject)).first()
        if user is not None:
            return user
        taken = session.exec(select(User).where(User.username == preferred[:200])).first() is not None
        name = f"oidc:{subject}"[:200] if taken else preferred[:200]
        user = User(username=name, role=Role.viewer, oidc_subject=subject)
        session.add(user)
        audit.record(
            session,
            actor="oidc",
            action="user_provisioned",
            target_type="user",
            target_id=name,
            after={"username": name, "role": Role.viewer.value, "oidc_subject": subject},
        )
        session.commit()
        session.refresh(user)
        return user


def _redirect_uri(request: Request) -> str:
    return str(request.url_for("oidc_callback"))
