"""Helpers shared by the webhook parsers: strict field access, bounded text, time parsing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from service.domain.errors import InvalidPayload

MAX_BODY_CHARS = 100_000  # longer descriptions are cut and flagged; the model reads far less anyway


def as_dict(value: Any, where: str) -> dict[str, Any]:
    """The value as a JSON object, or InvalidPayload naming the field."""
    if not isinstance(value, dict):
        raise InvalidPayload(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def as_str(value: Any, where: str, *, required: bool = False, allow_int: bool = True) -> str:
    """A string field; ids sent as numbers are accepted (Jira Automation sends them so) unless allow_int=False."""
    if value is None or value == "":
        if required:
            raise InvalidPayload(f"{where} is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int) or (not allow_int and not isinstance(value, str)):
        raise InvalidPayload(f"{where} must be a string, got {type(value).__name__}")
    return str(value)


def bounded_text(text: str, *, limit: int = MAX_BODY_CHARS) -> tuple[str, bool]:
    """Cut text to `limit` characters; the flag says whether it was cut."""
    return (text[:limit], True) if len(text) > limit else (text, False)


def parse_time(value: Any) -> datetime | None:
    """Jira (`2026-07-14T09:14:03.512+0000`) or ServiceNow (`2026-07-14 09:20:11`, UTC) time; None if unparsable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00 for fromisoformat on 3.11
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def delivery_header(headers: Mapping[str, str], name: str) -> str | None:
    """A bounded delivery-id header value, or None when absent/blank."""
    value = (headers.get(name) or "").strip()
    return value[:200] or None
