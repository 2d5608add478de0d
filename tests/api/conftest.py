"""Fixtures for the HTTP edge: a TestClient app, a live uvicorn server, a Redis broker we can inspect."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.settings import Settings

REDIS_DB = 11  # the API tests' own Redis database, flushed per test


@pytest.fixture
def redis_broker(settings: Settings) -> Iterator[tuple[Settings, redis.Redis]]:
    """Settings whose broker is the real Redis (db 11, emptied), and a client to look at the queues."""
    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    client.flushdb()
    yield settings.model_copy(update={"broker_url": url}), client
    client.flushdb()
    client.close()


@pytest.fixture
def api(redis_broker: tuple[Settings, redis.Redis]) -> Iterator[tuple[TestClient, redis.Redis, FastAPI]]:
    """A TestClient over create_app with the real database and the real Redis broker."""
    settings, client = redis_broker
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client, client, app


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app in a background thread, for tests that need real concurrent HTTP."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def queued_tasks(client: redis.Redis, queue: str = "triage") -> list[str]:
    """Task names waiting on a Redis queue (kombu keeps each message as a JSON list item)."""
    import json

    return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]
