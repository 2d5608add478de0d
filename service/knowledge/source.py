"""What a knowledge-base connector hands the sync: article records, a complete listing, and retried reads."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import structlog

from service.connectors._http import HttpCaller, json_body
from service.domain.errors import PermanentUpstream, TransientUpstream

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ArticleRecord:
    """One article as a source returns it; `published` False means it must leave the knowledge base."""

    external_id: str
    number: str
    collection: str
    title: str
    url: str | None
    language: str
    html: str
    version: str
    updated_at: datetime | None
    published: bool


@dataclass(frozen=True)
class Listing:
    """Ids of every article the source publishes now, read to the end.

    `collections` names the knowledge bases / spaces the listing covers completely (None: all of them): a sync
    removes only stored articles of a covered collection that the listing lacks.
    """

    ids: frozenset[str]
    collections: frozenset[str] | None = None
    errors: tuple[str, ...] = ()  # parts that could not be read (their articles are kept)


class KnowledgeSource(Protocol):
    """A knowledge base the sync reads: changed articles since a cursor, and the complete published listing."""

    name: str

    def changed(self, cursor: str | None, known: dict[str, str]) -> Iterator[ArticleRecord]:
        """Articles changed since `cursor` (known: external id -> stored version), published or not."""
        ...

    def next_cursor(self) -> str | None:
        """The cursor to start from next time (valid once `changed` was read to its end)."""
        ...

    def listing(self) -> Listing:
        """Every currently published article id; raises when any page of it could not be read."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class RetryingReader:
    """GETs JSON through an HttpCaller, retrying 429 / 5xx / lost connections with capped exponential backoff.

    A Retry-After the server sends is honoured; one longer than `cap_s` ends the sync instead (the next scheduled
    sync resumes), so a worker is never parked for an hour.
    """

    def __init__(
        self,
        caller: HttpCaller,
        *,
        max_retries: int,
        base_s: float,
        cap_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.caller = caller
        self.max_retries = max_retries
        self.base_s = base_s
        self.cap_s = cap_s
        self._sleep = sleep
        self.retries = 0  # how many retries this reader made (reported by the sync)

    def get(self, path: str, params: dict[str, str | int] | None = None) -> tuple[Any, dict[str, str]]:
        """(JSON body, response headers) of a GET; raises PermanentUpstream, or TransientUpstream once out of tries."""
        attempt = 0
        while True:
            try:
                response = self.caller.request("GET", path, idempotent=True, params=params)
            except PermanentUpstream:
                raise
            except TransientUpstream as exc:
                if attempt >= self.max_retries:
                    raise
                delay = self._delay(attempt, exc.retry_after_s)
                if delay is None:
                    raise TransientUpstream(
                        f"{exc} (Retry-After {exc.retry_after_s:.0f} s exceeds the {self.cap_s:.0f} s cap)",
                        status=exc.status,
                        retry_after_s=exc.retry_after_s,
                    ) from exc
                attempt += 1
                self.retries += 1
                log.info("kb_request_retried", system=self.caller.system, attempt=attempt, delay_s=round(delay, 2))
                self._sleep(delay)
                continue
            body = json_body(response)
            if body is None:
                raise PermanentUpstream(f"{self.caller.system} GET {path}: the response is not JSON")
            return body, dict(response.headers)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next try; None when the server asks for more than the cap."""
        if retry_after is not None:
            return retry_after if retry_after <= self.cap_s else None
        # Full jitter: concurrent syncs (several workers' beats, a CLI run) do not retry in lockstep.
        return random.uniform(0.5, 1.0) * min(self.cap_s, self.base_s * (2**attempt))

    def close(self) -> None:
        """Release the HTTP client."""
        self.caller.close()
