"""POST /webhooks/{source}: verify on raw bytes, normalise, commit, then enqueue by task name; answer fast."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.api.body import decode_json, read_limited
from service.api.problems import Problem
from service.domain.errors import InvalidPayload, InvalidSignature
from service.domain.ports import WebhookParser
from service.ingest import StoreResult, store_event

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])

_SLOW_BODY_TIMEOUT_S = 10.0  # a client trickling bytes is cut off (RELIABILITY T22)


@router.post(
    "/webhooks/{source}",
    status_code=202,
    responses={
        200: {"description": "duplicate delivery: nothing new stored or enqueued"},
        401: {"description": "bad or missing signature"},
        404: {"description": "unknown source"},
        413: {"description": "body too large"},
        400: {"description": "malformed body"},
        422: {"description": "not a payload of this source"},
        503: {"description": "database unavailable"},
    },
)
async def receive_webhook(source: str, request: Request) -> JSONResponse:
    """Accept one webhook delivery from Jira/JSM or ServiceNow."""
    started = time.perf_counter()
    state = request.app.state
    parser: WebhookParser | None = state.parsers.get(source)
    if parser is None:
        problem = Problem(404, "unknown_source", f"no webhook receiver for source {source!r}; use jira or servicenow")
        _log_rejection(request, source, problem, delivery_id=None)
        raise problem
    outcome = "error"
    raw = b""
    headers: dict[str, str] = {}
    try:
        raw = await read_limited(request, limit=state.settings.api.max_body_bytes, timeout_s=_SLOW_BODY_TIMEOUT_S)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            parser.verify(raw, headers)  # before parsing: unsigned bytes are never interpreted
        except InvalidSignature as exc:
            raise Problem(401, "invalid_signature", str(exc)) from None
        payload = decode_json(raw)
        delivery_id = parser.delivery_id(raw, headers)
        try:
            event = parser.parse(payload, delivery_id=delivery_id)
        except InvalidPayload as exc:
            raise Problem(422, "invalid_payload", str(exc)) from None
        result = await _store(request, event, raw.decode("utf-8"))  # redacts, then seals or drops the raw payload
        outcome = result.outcome
        if result.enqueue and result.event_id is not None:
            state.relay.submit(result.event_id)  # committed already; publishing happens off the request path
            outcome = "accepted"
        log.info(
            "webhook_received",
            source=source,
            delivery_id=delivery_id,
            event_type=event.event_type,
            outcome=outcome,
            event_id=result.event_id,
            ticket_id=result.ticket_id,
        )
        body: dict[str, Any] = {"status": outcome, "event_id": result.event_id, "ticket_id": result.ticket_id}
        if result.reason:
            body["reason"] = result.reason
        return JSONResponse(body, status_code=200 if result.outcome == "duplicate" else 202)
    except Problem as problem:
        outcome = problem.code
        if problem.status < 500:  # a 503 is ours (database down), not the sender's fault
            _log_rejection(request, source, problem, delivery_id=_delivery_id(parser, raw, headers))
        raise
    finally:
        state.metrics.webhooks.labels(source, outcome).inc()
        state.metrics.ack_seconds.labels(source).observe(time.perf_counter() - started)


def _delivery_id(parser: WebhookParser, raw: bytes, headers: dict[str, str]) -> str | None:
    """The delivery id for a rejection's log line (header, else body hash); None when there is none to give."""
    if not raw and not headers:
        return None
    try:
        return parser.delivery_id(raw, headers)
    except Exception:  # noqa: BLE001  a log line must never turn a 4xx into a 500
        return None


def _log_rejection(request: Request, source: str, problem: Problem, *, delivery_id: str | None) -> None:
    """Rejections are logged (rate-limited) so a misconfigured or probing sender is visible: never body or secret."""
    request.app.state.rejections.rejected(
        source=source,
        reason=problem.code,
        status=problem.status,
        delivery_id=delivery_id,
        remote_addr=request.client.host if request.client else None,
        detail=problem.detail,
    )


async def _store(request: Request, event: Any, payload: str) -> StoreResult:
    """Commit within the request deadline; a database that is down or locked yields 503 so the sender retries."""
    state = request.app.state
    deadline = state.settings.api.request_timeout_s
    try:
        return await asyncio.wait_for(
            run_in_threadpool(store_event, state.engine, event, payload=payload, cipher=state.payload_cipher), deadline
        )
    except (TimeoutError, PoolTimeout):
        log.warning("webhook_store_timed_out", source=event.source, deadline_s=deadline)
        raise Problem(
            503,
            "database_timeout",
            f"could not store the event within {deadline:g} s; retry later",
            headers={"Retry-After": "5"},
        ) from None
    except DataError as exc:
        # A value the database refuses (out of range, bad encoding) is the sender's input, not an outage.
        log.warning("webhook_store_rejected", source=event.source, error=type(exc).__name__)
        raise Problem(422, "invalid_payload", "a field value is outside what can be stored") from None
    except (OperationalError, InterfaceError) as exc:
        log.warning("webhook_store_failed", source=event.source, error=type(exc).__name__)
        raise Problem(
            503,
            "database_unavailable",
            "the event could not be stored; retry later",
            headers={"Retry-After": "5"},
        ) from None
