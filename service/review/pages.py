"""Page rendering for the review UI: templates with the caller, CSRF token and flash message; safe redirects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.templating import Jinja2Templates

from service.review.auth import context, ensure_session, set_session_cookie, ui_principal

FLASHES = {"approved", "rejected", "corrected", "unchanged"}
# Jinja2Templates autoescapes .html: ticket text and model output always render as text.
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(request: Request, name: str, ctx: dict[str, Any], *, status: int = 200) -> Response:
    """Render a template with the caller, their CSRF token and the flash message; keeps the session cookie."""
    session, new = ensure_session(request)
    principal = ctx.pop("principal", None) or ui_principal(request)
    page = {
        "principal": principal,
        "csrf_token": session.csrf,
        # Only known outcomes are echoed: arbitrary text in a trusted banner would be content spoofing.
        "done": done if (done := request.query_params.get("done")) in FLASHES else None,
        "oidc": bool(context(request).settings.review.oidc_issuer),
        **ctx,
    }
    response = templates.TemplateResponse(request, name, page, status_code=status)
    if new:
        set_session_cookie(response, request, session)
    return response


def safe_next(target: str | None) -> str:
    """Only same-site paths under /review are valid redirect targets (no open redirect)."""
    if target and target.startswith("/review") and not target.startswith("//") and "\\" not in target:
        return target
    return "/review/"
