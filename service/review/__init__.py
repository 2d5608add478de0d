"""The agents' review UI (/review) and JSON API (/api/v1): `mount(app, settings)` wires them into the API app."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service.review.auth import LoginRequired, ReviewContext, ReviewError
from service.review.headers import SecurityHeadersMiddleware
from service.review.security import SessionSigner
from service.settings import Settings

log = structlog.get_logger(__name__)


def mount(app: FastAPI, settings: Settings) -> None:
    """Add the review routers, static files, security headers and error rendering to `app`.

    Expects app.state.engine and app.state.celery to be set by the caller (create_app or a test app).
    """
    from service.review import adapters, api, login, oidc, ui

    secret = settings.review.session_secret
    if secret is None:
        # Sessions then die with the process and differ between replicas: fine for tests, wrong for production.
        log.warning("review_session_secret_generated", hint="set ITSM_REVIEW__SESSION_SECRET")
    signer = SessionSigner(
        secret.get_secret_value() if secret else secrets.token_urlsafe(32), max_age_s=settings.review.session_max_age_s
    )
    app.state.review = ReviewContext(settings=settings, signer=signer)
    app.include_router(login.router)
    app.include_router(ui.router)
    app.include_router(adapters.router)
    app.include_router(oidc.router)
    app.include_router(api.router)
    app.mount("/review/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="review-static")
    app.add_exception_handler(ReviewError, _on_review_error)
    app.add_middleware(SecurityHeadersMiddleware)


async def _on_review_error(request: Request, exc: Exception) -> Response:
    """HTML for the UI (login redirect for pages), the service's JSON error shape for the API."""
    assert isinstance(exc, ReviewError)
    if request.url.path.startswith("/review"):
        if isinstance(exc, LoginRequired) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/review/login?next={quote(target)}", status_code=303)
        from service.review.pages import render

        return render(
            request, "error.html", {"status": exc.status, "code": exc.code, "detail": exc.detail}, status=exc.status
        )
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)
