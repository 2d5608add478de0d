"""Shared outbound HTTP: one httpx client per connector, precise error classification, Retry-After parsing.

The connector never sleeps or retries across attempts (the delivery task owns backoff); it only says
*what kind* of failure happened, so the caller can retry, look before writing again, or dead-letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from service.domain.errors import OutcomeUnknown, PermanentUpstream, TransientUpstream

# 4xx that a retry can fix: edge timeouts, Jira's "conflicting update", too early, rate limited.
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})
_MAX_MESSAGE_CHARS = 500

ErrorMessage = Callable[[httpx.Response], str]


def _parse_delay(value: str, now: float) -> float | None:
    """Seconds until a header value: delta-seconds, an HTTP date, an ISO-8601 time, or UNIX epoch seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        # A value this large is an absolute epoch (ServiceNow X-RateLimit-Reset), not a delay.
        return max(0.0, number - now) if number > 1e9 else max(0.0, number)
    when: datetime | None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        try:  # Jira's X-RateLimit-Reset: "2026-07-14T09:16Z"
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: Retry-After, else X-RateLimit-Reset; None if neither parses."""
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after", "x-ratelimit-reset"):
        if name in lowered:
            delay = _parse_delay(lowered[name], now)
            if delay is not None:
                return delay
    return None


def _truncate(message: str) -> str:
    """Keep error messages short enough for logs, the outbox row and the UI."""
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 3] + "..."


def classify_response(
    response: httpx.Response,
    *,
    system: str,
    idempotent: bool,
    error_message: ErrorMessage,
    now: float | None = None,
) -> None:
    """Raise the domain error that a non-2xx response means; return quietly on success."""
    status = response.status_code
    if status < 400:
        return
    what = f"{system} {response.request.method} {response.request.url.path} -> {status}"
    detail = _truncate(error_message(response))
    message = f"{what}: {detail}" if detail else what
    if status in _TRANSIENT_4XX or status >= 500:
        retry_after = retry_after_seconds(response.headers, now=now)
        # A gateway error on a write that is not idempotent may still have been applied upstream.
        if status >= 500 and not idempotent:
            exc: TransientUpstream = OutcomeUnknown(message, status=status, retry_after_s=retry_after)
        else:
            exc = TransientUpstream(message, status=status, retry_after_s=retry_after)
        raise exc
    raise PermanentUpstream(message, status=status)


class HttpCaller:
    """One connector's HTTP client: base URL, auth, timeouts; exceptions mapped to the domain error tree."""

    def __init__(
        self,
        *,
        system: str,
        base_url: str,
        auth: httpx.Auth | tuple[str, str] | None,
        timeout_s: float,
        error_message: ErrorMessage,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.system = system
        self._error_message = error_message
        self._clock = clock
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            # Connect fast-fails (nothing was sent); reads get the full budget.
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            headers={"Accept": "application/json", "User-Agent": "itsm-triage/0.1"},
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Release pooled connections."""
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """Send one request; return a 2xx/3xx response or raise Transient/OutcomeUnknown/PermanentUpstream."""
        what = f"{self.system} {method} {path}"
        try:
            response = self.client.request(method, path, params=params, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never reached the server: always safe to retry.
            raise TransientUpstream(f"{what}: cannot connect ({type(exc).__name__})") from exc
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The request may have been received and applied; only idempotent calls can be simply repeated.
            reason = f"{what}: no response ({type(exc).__name__})"
            if idempotent:
                raise TransientUpstream(reason) from exc
            raise OutcomeUnknown(reason) from exc
        except httpx.HTTPError as exc:
            raise TransientUpstream(f"{what}: {type(exc).__name__}: {exc}") from exc
        classify_response(
            response,
            system=self.system,
            idempotent=idempotent,
            error_message=self._error_message,
            now=self._clock(),
        )
        return response


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or None when the body is empty or not JSON (401s often are not)."""
    try:
        return response.json()
    except ValueError:
        return None
