"""Celery app factory shared by producer (API, sweeper) and consumer (workers); enqueue by task NAME."""

from __future__ import annotations

import time
from typing import Any

import structlog
from celery import Celery

from service.settings import Settings

TRIAGE_QUEUE = "triage"
DRAFT_QUEUE = "draft"  # reply suggestions, after the labels (workers/drafts.py)
DELIVER_QUEUE = "deliver"
LEARN_QUEUE = "learn"  # scheduled retrains (minutes of model work): a worker of its own (service/learning/retrain.py)
QUEUES = (TRIAGE_QUEUE, DRAFT_QUEUE, DELIVER_QUEUE, LEARN_QUEUE)

# Task names are the contract between the API and the workers: the API never imports workers/.
TRIAGE_EVENT_TASK = "itsm.triage_event"
DRAFT_TASK = "itsm.draft"
DELIVER_TASK = "itsm.deliver"
SWEEP_TASK = "itsm.sweep"
RETRAIN_TASK = "itsm.retrain"
ADAPTERS_CHECK_TASK = "itsm.adapters_check"

TASK_QUEUES = {
    TRIAGE_EVENT_TASK: TRIAGE_QUEUE,
    DRAFT_TASK: DRAFT_QUEUE,
    DELIVER_TASK: DELIVER_QUEUE,
    SWEEP_TASK: DELIVER_QUEUE,
    RETRAIN_TASK: LEARN_QUEUE,
    ADAPTERS_CHECK_TASK: DELIVER_QUEUE,
}

log = structlog.get_logger(__name__)


def make_celery(settings: Settings, *, name: str = "itsm") -> Celery:
    """A Celery app configured for reliability: late acks, JSON only, bounded publish retries."""
    app = Celery(name, broker=settings.broker_url)
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport_options = {
            "visibility_timeout": settings.worker.visibility_timeout_s,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        }
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=settings.worker.prefetch_multiplier,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=settings.worker.task_time_limit_s,
        # The soft limit leaves a task time to record its failure: 10 s, or a tenth of a short limit.
        task_soft_time_limit=settings.worker.task_time_limit_s
        - max(1, min(10, settings.worker.task_time_limit_s // 10)),
        task_routes={name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        task_default_queue=DELIVER_QUEUE,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=2,
        # A broker outage must not stall the webhook ack: fail fast; the relay retries after a cool-down.
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        broker_pool_limit=20,
    )
    return app


def enqueue(app: Celery, task_name: str, *args: Any, countdown: float | None = None, producer: Any = None) -> None:
    """Publish a task by name onto its queue (ids only, never objects); pass a producer to reuse its connection."""
    send = lambda: app.send_task(  # noqa: E731
        task_name, args=list(args), queue=TASK_QUEUES[task_name], countdown=countdown, producer=producer
    )
    try:
        send()
    except Exception:
        if producer is not None or not str(app.conf.broker_url or "").startswith("sqla+"):
            raise
        # kombu's SQLAlchemy transport can leave a pooled channel closed after a failed publish (its connection is
        # None: "'NoneType' object has no attribute 'client'", then "channel disconnected" on every later publish
        # through that pool; CI's browser test lost an approval's delivery to it): fresh connections, once more
        log.info("broker_pool_reset", task=task_name)
        _fresh_pools(app)
        send()


def _fresh_pools(app: Celery) -> None:
    """Drop the app's connection and producer pools and kombu's cached SQLAlchemy engines (rebuilt on next use)."""
    pool = app.__dict__.get("_pool")
    if pool is not None:
        try:
            pool.force_close_all()
        except Exception as exc:  # noqa: BLE001  a broken connection may fail to close; it is dropped either way
            log.info("broker_pool_close_failed", error=f"{type(exc).__name__}: {exc}")
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
    from kombu import pools

    pools.reset()  # the producer pools kombu keeps per connection, process-wide: else the closed one comes back
    _forget_sqla_engines()


def declare_queues(app: Celery, attempts: int = 5) -> bool:
    """Create the queues' rows in a SQLAlchemy broker before the first publish or consume (no-op for Redis).

    kombu's SQLAlchemy transport creates a queue's row on first use and does not catch the unique-constraint error
    when another process creates the same row at the same moment: a worker died at startup with "Unrecoverable
    error: IntegrityError", and the API's first publish of a delivery failed the same way (the sweeper resent it a
    minute later). Every process that publishes or consumes declares here, with retries on a fresh connection; after
    that nobody creates rows and nobody races. Returns whether the rows are there.
    """
    if not str(app.conf.broker_url or "").startswith("sqla+"):
        return True
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            with app.connection_for_write() as conn:
                for name in QUEUES:
                    conn.default_channel.queue_declare(queue=name)
            return True
        except (IntegrityError, OperationalError) as exc:  # the other process won the race: its row is there now
            log.info("broker_queue_declare_retry", attempt=attempt + 1, error=type(exc).__name__)
            time.sleep(0.1 * (attempt + 1))
        finally:
            _forget_sqla_engines()
    log.warning("broker_queues_not_declared", attempts=attempts)  # the first publish or consume tries once more
    return False


def _forget_sqla_engines() -> None:
    """Close the engines kombu's SQLAlchemy transport caches per class: a worker's pool children fork after the
    declaration and must not inherit (and share) the parent's pooled SQLite connections, and a session that lost
    the race must not be reused."""
    from kombu.transport.sqlalchemy import Channel

    for engine, _ in list(Channel._engines.values()):
        engine.dispose()
    Channel._engines.clear()
