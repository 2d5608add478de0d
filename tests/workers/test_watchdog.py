"""The consumer watchdog: when it calls a consumer stalled, and the broker probe it relies on."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy.exc import OperationalError

from service.queue import make_celery
from service.settings import Settings
from workers.watchdog import StallDetector, _connection_error, queue_depth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stall_is_called_only_after_work_waited_the_whole_timeout_with_a_free_slot() -> None:
    clock = Clock()
    d = StallDetector(30, clock=clock)
    started, received = 900.0, 950.0
    assert not d.observe(5, True, received, started)  # first sight of waiting work starts the clock
    clock.now += 29
    assert not d.observe(5, True, received, started)
    clock.now += 2
    assert d.observe(5, True, received, started)


def test_a_received_message_a_busy_worker_or_an_empty_queue_resets_the_clock() -> None:
    clock = Clock()
    d = StallDetector(30, clock=clock)
    assert not d.observe(3, True, 0.0, 0.0)
    clock.now += 20
    assert not d.observe(3, True, clock.now - 1, 0.0)  # a message arrived: progress
    clock.now += 20
    assert not d.observe(3, True, clock.now - 21, 0.0)  # 20 s since that arrival: not yet
    clock.now += 11
    assert d.observe(3, True, clock.now - 32, 0.0)

    for depth, free in ((0, True), (None, True), (4, False)):
        d = StallDetector(30, clock=clock)
        assert not d.observe(3, True, 0.0, 0.0)
        clock.now += 40
        assert not d.observe(depth, free, 0.0, 0.0), (depth, free)  # resets
        clock.now += 40
        assert not d.observe(3, True, 0.0, 0.0)  # starts over


def test_a_consumer_restart_counts_as_progress() -> None:
    clock = Clock()
    d = StallDetector(10, clock=clock)
    assert not d.observe(1, True, 0.0, 0.0)
    clock.now += 11
    assert not d.observe(1, True, 0.0, clock.now - 5)  # restarted 5 s ago


def test_the_raised_error_is_one_celery_restarts_the_consumer_on() -> None:
    from kombu import Connection

    for url in ("redis://127.0.0.1:6379/0", "sqla+sqlite:////tmp/never-opened.db"):
        errors = Connection(url).connection_errors
        exc = _connection_error(errors, "stalled")
        assert isinstance(exc, errors), url
    assert isinstance(_connection_error((OperationalError,), "x"), OperationalError)


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
def test_queue_depth_counts_waiting_messages_on_a_fresh_connection(kind: str, tmp_path: object) -> None:
    if kind == "redis":
        url = "redis://127.0.0.1:6379/13"  # this test's own database
        redis.Redis.from_url(url).flushdb()
    else:
        url = f"sqla+sqlite:///{tmp_path}/broker.db"
    app = make_celery(Settings(broker_url=url, database_url="sqlite://"))
    assert queue_depth(app, ["triage", "deliver"]) == 0  # never declared: zero, not an error
    for n in range(3):
        app.send_task("itsm.triage_event", args=[n], queue="triage")
    app.send_task("itsm.deliver", args=[1], queue="deliver")
    assert queue_depth(app, ["triage"]) == 3
    assert queue_depth(app, ["triage", "deliver"]) == 4
    if kind == "redis":
        redis.Redis.from_url(url).flushdb()


def test_only_redis_brokers_are_watched() -> None:
    from kombu import Connection

    from workers.watchdog import WATCHED_DRIVERS

    assert Connection("redis://127.0.0.1:6379/0").transport.driver_type in WATCHED_DRIVERS
    assert Connection("sqla+sqlite:////tmp/never-opened.db").transport.driver_type not in WATCHED_DRIVERS
