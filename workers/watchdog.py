"""Consumer watchdog: restarts a Celery consumer that stopped taking messages while its queues have work.

Why: after Redis freezes while an ack is pending, the Redis transport can stop issuing BRPOP for good while the
worker's event loop (and so its heartbeat) keeps running: messages pile up and nothing is processed (T13 in
RELIABILITY.md; celery/celery#8030). Celery already knows how to recover from a lost connection, so the watchdog
raises a connection error from the consumer's own event loop and lets Celery reconnect. A probe thread asks the
broker for queue depths on a fresh connection, so a frozen broker never blocks the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import structlog
from celery import Celery, bootsteps
from celery.signals import task_received
from celery.worker import state as worker_state

log = structlog.get_logger(__name__)

_last_received = time.monotonic()


def _on_received(**_: Any) -> None:
    global _last_received
    _last_received = time.monotonic()


task_received.connect(_on_received, weak=False)


def queue_depth(app: Celery, queues: Sequence[str], timeout_s: float = 5.0) -> int:
    """Messages waiting in `queues`, read on a new broker connection (raises if the broker does not answer)."""
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout_s)
        channel = conn.channel()
        try:
            total = 0
            for name in queues:
                try:
                    total += int(channel.queue_declare(queue=name, passive=True).message_count)
                except conn.channel_errors:  # a queue that was never written to does not exist yet
                    continue
            return total
        finally:
            channel.close()


class StallDetector:
    """Decides whether a consumer is stalled: work has waited `stall_s` while a slot was free and nothing arrived."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self.waiting_since: float | None = None  # first probe (of the current run) that saw work while a slot was free

    def observe(self, depth: int | None, free_slot: bool, last_received: float, started_at: float) -> bool:
        """Feed one probe result; True when the consumer should be restarted."""
        now = self.clock()
        if depth is None or depth <= 0 or not free_slot:
            self.waiting_since = None
            return False
        if self.waiting_since is None or last_received > self.waiting_since:
            self.waiting_since = max(now, last_received)
            return False
        progress = max(last_received, started_at, self.waiting_since)
        return now - progress >= self.stall_s


class _Probe(threading.Thread):
    """Polls queue depths every `interval_s` in the background; the event loop only reads the last result."""

    def __init__(self, app: Celery, queues: Sequence[str], interval_s: float) -> None:
        super().__init__(name="itsm-queue-probe", daemon=True)
        self.app, self.queues, self.interval_s = app, list(queues), interval_s
        self.depth: int | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.depth = queue_depth(self.app, self.queues)
            except Exception as exc:  # noqa: BLE001  broker down: no verdict; Celery handles the outage itself
                self.depth = None
                log.debug("queue_probe_failed", error=f"{type(exc).__name__}: {exc}")
            self.stop_event.wait(self.interval_s)


def _connection_error(errors: Sequence[type[BaseException]], message: str) -> BaseException:
    """An instance of one of the transport's connection errors (what Celery's consumer restarts on)."""
    for exc_type in errors:
        if issubclass(exc_type, OSError):
            return exc_type(message)
    exc_type = errors[0]
    try:
        return exc_type(message)
    except TypeError:  # e.g. SQLAlchemy's DBAPIError(statement, params, orig)
        return exc_type(message, None, RuntimeError(message))  # type: ignore[call-arg]


# Only Redis shows the wedge. Polling transports such as the embedded SQLite broker re-read their queues on every
# poll, and probing one from a second connection only adds writers (kombu creates its tables and queue rows on connect).
WATCHED_DRIVERS = frozenset({"redis"})


class ConsumerWatchdog(bootsteps.StartStopStep):
    """Consumer bootstep: every check, restart the consumer (via a connection error) when it has stalled."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}
    stall_s: ClassVar[float] = 60.0  # set by make_worker_app from the settings; 0 disables the watchdog

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.probe: _Probe | None = None
        self.entry: Any = None

    def start(self, c: Any) -> None:
        """Start probing this consumer's queues and checking on the event loop's timer."""
        if self.stall_s <= 0 or c.connection.transport.driver_type not in WATCHED_DRIVERS:
            return
        interval = max(1.0, min(10.0, self.stall_s / 4))
        queues = [q.name for q in c.task_consumer.queues]
        self.probe = _Probe(c.app, queues, interval)
        self.probe.start()
        detector = StallDetector(self.stall_s)
        started_at = time.monotonic()
        probe = self.probe

        def check() -> None:
            qos = c.qos.value
            free_slot = qos == 0 or len(worker_state.reserved_requests) < qos
            if detector.observe(probe.depth, free_slot, _last_received, started_at):
                detector.waiting_since = None
                log.error(
                    "consumer_stalled", queues=queues, waiting=probe.depth, stalled_s=self.stall_s, action="reconnect"
                )
                raise _connection_error(c.connection.connection_errors, "consumer stalled: reconnecting")

        self.entry = c.timer.call_repeatedly(interval, check, priority=5)

    def stop(self, c: Any) -> None:
        """Stop the probe and the timer entry (a restart starts fresh ones)."""
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        if self.probe is not None:
            self.probe.stop_event.set()
            self.probe = None

    shutdown = stop
