"""Liveness, readiness (the database; the broker only reported) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.engine import Engine

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers; a broker outage shows in the body but never fails readiness."""
    state = request.app.state
    broker = "ok" if state.relay.healthy else f"degraded: {state.relay.last_error}"
    try:
        await asyncio.wait_for(run_in_threadpool(_ping, state.engine), timeout=2.0)
    except Exception as exc:  # noqa: BLE001  (any failure to reach the database means not ready)
        state.metrics.database_up.set(0)
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__, "broker": broker}, 503)
    state.metrics.database_up.set(1)
    return JSONResponse({"status": "ready", "database": "ok", "broker": broker})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the API's metrics (off the event loop: some are read from the database)."""
    body = await run_in_threadpool(request.app.state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
