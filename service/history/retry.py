"""Reads that ride out rate limits and outages: honour Retry-After, else exponential backoff with jitter.

The connectors' HttpCaller classifies each response (429 / 5xx / timeouts are TransientUpstream with the server's
Retry-After); a bulk import, unlike a delivery task, has no queue to retry it later, so it waits here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import structlog

from service.connectors._http import HttpCaller
from service.domain.errors import TransientUpstream

log = structlog.get_logger(__name__)

Waited = Callable[[TransientUpstream, float, int], None]


def backoff_s(attempt: int, retry_after_s: float | None, *, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Equal-jitter exponential backoff for the n-th retry, never shorter than the server's Retry-After."""
    ceiling = min(cap_s, base_s * 2 ** (attempt - 1))
    return max(ceiling / 2 + random.uniform(0, ceiling / 2), retry_after_s or 0.0)


class RetryingReader:
    """Idempotent reads through an HttpCaller, retried on transient failures up to `attempts` times in a row."""

    def __init__(
        self,
        http: HttpCaller,
        *,
        attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
        on_wait: Waited | None = None,
    ) -> None:
        self.http = http
        self.attempts = attempts
        self._sleep = sleep
        self._on_wait = on_wait

    def request(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None, json: Any = None
    ) -> httpx.Response:
        """The 2xx response; TransientUpstream after `attempts` failures; PermanentUpstream at once."""
        for attempt in range(1, self.attempts + 1):
            try:
                # Searches are POSTs but read-only: repeating one after a lost response is safe.
                return self.http.request(method, path, idempotent=True, params=params, json=json)
            except TransientUpstream as exc:
                if attempt == self.attempts:
                    raise
                delay = backoff_s(attempt, exc.retry_after_s)
                log.debug("history_request_retried", system=self.http.system, status=exc.status, wait_s=delay)
                if self._on_wait is not None:
                    self._on_wait(exc, delay, attempt)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Release pooled connections."""
        self.http.close()
