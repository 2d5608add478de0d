"""The worker app's reliability configuration (RELIABILITY T9's config canary) and process discipline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.queue import (
    DELIVER_QUEUE,
    DELIVER_TASK,
    LEARN_QUEUE,
    QUEUES,
    RETRAIN_TASK,
    SWEEP_TASK,
    TRIAGE_EVENT_TASK,
    TRIAGE_QUEUE,
)
from service.settings import Settings
from workers.app import WorkerRuntime, make_worker_app


def _redis_settings(**worker: int) -> Settings:
    return Settings(broker_url="redis://127.0.0.1:6379/15", model={"backend": "fake"}, worker=worker)


def test_visibility_timeout_exceeds_the_task_time_limit_in_production_defaults() -> None:
    app = make_worker_app(_redis_settings())
    vt = app.conf.broker_transport_options["visibility_timeout"]
    assert vt > app.conf.task_time_limit
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    # A countdown retry must also come back before the broker would redeliver it.
    assert vt > Settings().worker.delivery_backoff_cap_s


def test_a_visibility_timeout_below_the_time_limit_is_rejected() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout"):
        _redis_settings(task_time_limit_s=600, visibility_timeout_s=300)


def test_late_acks_json_only_and_queue_routing() -> None:
    app = make_worker_app(_redis_settings())
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_routes[TRIAGE_EVENT_TASK]["queue"] == TRIAGE_QUEUE
    assert conf.task_routes[DELIVER_TASK]["queue"] == DELIVER_QUEUE
    for name in (TRIAGE_EVENT_TASK, DELIVER_TASK, SWEEP_TASK):
        task = app.tasks[name]
        assert task.acks_late
    assert app.tasks[TRIAGE_EVENT_TASK].reject_on_worker_lost and app.tasks[DELIVER_TASK].reject_on_worker_lost
    sweep = conf.beat_schedule["itsm-sweep"]
    assert sweep["task"] == SWEEP_TASK and sweep["schedule"] == Settings().worker.sweep_interval_s


def test_a_retrain_is_acknowledged_on_receipt() -> None:
    """A retrain outlasts the visibility timeout: acked late, Redis would hand it to a second worker mid-run."""
    app = make_worker_app(_redis_settings())
    retrain = app.tasks[RETRAIN_TASK]
    assert not retrain.acks_late
    assert retrain.time_limit > app.conf.broker_transport_options["visibility_timeout"]
    assert app.conf.task_routes[RETRAIN_TASK]["queue"] == LEARN_QUEUE


def test_building_the_app_loads_no_model() -> None:
    """The model must load in pool children after fork, never in the parent that builds the app."""
    app = make_worker_app(_redis_settings())
    runtime: WorkerRuntime = app.itsm_runtime  # type: ignore[attr-defined]
    assert runtime._triager is None and runtime._engine is None


def _worker_env(tmp_path: Path, scratch: Path | None = None) -> dict[str, str]:
    """Environment for a real `itsm-triage worker` on SQLite, the embedded broker and the fake model, its database
    migrated; with `scratch`, tempfile.gettempdir() (where the probe files go) points there."""
    env = {
        **os.environ,
        "ITSM_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "ITSM_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}",
        "ITSM_MODEL__BACKEND": "fake",
        **({"TMPDIR": str(scratch)} if scratch else {}),
    }
    subprocess.run([sys.executable, "-m", "service.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def _start_worker(env: dict[str, str], *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """`itsm-triage worker ARGS` in a process of its own, output discarded."""
    return subprocess.Popen([sys.executable, "-m", "service.cli", "worker", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)  # fmt: skip


def _wait_for(check: Any, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not check():
        time.sleep(0.3)
    return bool(check())


def test_worker_heartbeat_file_is_touched_by_the_running_worker(tmp_path, monkeypatch) -> None:
    """The chart's liveness probe reads this file: a running worker must keep it fresh."""
    from workers.app import HEARTBEAT_FILE

    before = HEARTBEAT_FILE.stat().st_mtime if HEARTBEAT_FILE.exists() else 0.0
    proc = _start_worker(_worker_env(tmp_path), "--queues", "deliver")
    try:
        fresh = _wait_for(lambda: HEARTBEAT_FILE.exists() and HEARTBEAT_FILE.stat().st_mtime > before)
        assert fresh and HEARTBEAT_FILE.exists() and HEARTBEAT_FILE.stat().st_mtime > before
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_soft_time_limit_leaves_a_sensible_margin_for_short_and_long_limits() -> None:
    from service.queue import make_celery
    from service.settings import Settings

    for limit, soft in ((5, 4), (11, 10), (60, 54), (600, 590)):
        app = make_celery(Settings(worker={"task_time_limit_s": limit, "visibility_timeout_s": limit + 1}))
        assert (app.conf.task_time_limit, app.conf.task_soft_time_limit) == (limit, soft)


def _declare_at_once(broker_url: str, barrier: object) -> None:
    """One process of the race below: wait for the others, then declare."""
    from service.queue import declare_queues

    app = make_worker_app(Settings(broker_url=broker_url, model={"backend": "fake"}))
    barrier.wait()  # type: ignore[attr-defined]
    raise SystemExit(0 if declare_queues(app) else 1)


def test_processes_declaring_the_embedded_brokers_queues_at_once_all_succeed_with_one_row_each(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # CI caught `itsm-triage run`'s worker dying at startup ("Unrecoverable error: IntegrityError ... kombu_queue.name")
    # when the API published the first webhook's task while the worker created the same queue row.
    import multiprocessing as mp
    import sqlite3

    ctx = mp.get_context("fork")
    for round_ in range(5):
        url = f"sqla+sqlite:///{tmp_path / f'broker{round_}.db'}"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_declare_at_once, args=(url, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with sqlite3.connect(tmp_path / f"broker{round_}.db") as db:
            names = sorted(r[0] for r in db.execute("SELECT name FROM kombu_queue"))
        assert names == sorted(QUEUES)


def test_the_api_and_the_sweep_command_declare_the_embedded_brokers_queues_before_publishing(settings) -> None:  # type: ignore[no-untyped-def]
    # CI caught the review API's first delivery publish failing with the same IntegrityError while a worker started:
    # every publisher declares up front, so no publish ever creates a queue row.
    import sqlite3

    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from workers.sweeper import sweep_once

    broker_db = settings.broker_url.removeprefix("sqla+sqlite:///")

    def rows() -> list[str]:
        with sqlite3.connect(broker_db) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return sorted(r[0] for r in db.execute("SELECT name FROM kombu_queue")) if "kombu_queue" in tables else []

    assert rows() == []
    with TestClient(create_app(settings)):
        assert rows() == sorted(QUEUES)

    other = settings.model_copy(update={"broker_url": settings.broker_url.replace("broker.db", "broker2.db")})
    broker_db = other.broker_url.removeprefix("sqla+sqlite:///")
    sweep_once(other)
    assert rows() == sorted(QUEUES)


def test_the_worker_parent_imports_no_lxml_or_torch_before_forking() -> None:
    """Importing lxml in the Celery parent broke beat's publishes to the embedded SQLite broker ("channel
    disconnected" after a 10 s lock wait; bisected to `from lxml import etree`), and torch must load in pool
    children only: both stay out of the modules a worker imports at start."""
    import subprocess
    import sys

    code = (
        "import sys, workers.app, workers.tasks, workers.drafts, workers.store, workers.note, workers.metrics\n"
        "print(sorted(m for m in ('lxml', 'html_text', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_publish_through_a_closed_pooled_channel_is_retried_on_fresh_connections(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """kombu's SQLAlchemy transport left a pooled channel closed after a failed publish, and every later publish
    through the pool failed ('channel disconnected'); enqueue starts from fresh connections and the message lands."""
    from service.queue import declare_queues, enqueue, make_celery

    settings = Settings(broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}", database_url="sqlite://")
    app = make_celery(settings)
    declare_queues(app)
    enqueue(app, DELIVER_TASK, 1)  # the pool now holds a producer with an open channel
    with app.producer_pool.acquire(block=True) as producer:
        producer.channel.close()  # what a failed publish left behind
    with app.producer_pool.acquire(block=True) as producer:
        broken = producer.channel.connection is None
    assert broken  # the pool hands the closed channel out again: without the reset, the next publish fails
    enqueue(app, DELIVER_TASK, 2)
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(DELIVER_QUEUE)
        bodies = [queue.get(timeout=5).payload for _ in range(2)]
        queue.close()
    assert [b[0] for b in bodies] == [[1], [2]]


def test_a_model_pool_is_ready_only_once_its_process_has_the_model(tmp_path) -> None:
    """The chart's readiness probe reads the ready file: a triage worker removes a stale one as it starts and a pool
    process writes it after loading the model; a delivery worker never claims it."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ready, heartbeat = scratch / "itsm-triage-worker.ready", scratch / "itsm-triage-worker.heartbeat"
    env = _worker_env(tmp_path, scratch)

    ready.write_text("left by the previous container")  # /tmp outlives a container restart in the pod
    proc = _start_worker(env, "--queues", "deliver")
    try:
        assert _wait_for(heartbeat.exists)
        assert not ready.exists()  # removed as the worker started; nothing here loads a model
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc = _start_worker(env, "--queues", "triage")
    try:
        assert _wait_for(lambda: ready.exists() and ready.stat().st_size == 0)  # written anew by the pool process
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_worker_stopped_with_its_pool_exits(tmp_path) -> None:
    """SIGTERM to the worker and its pool processes at once (Ctrl-C in a terminal, `run` and its workers stopped
    together): Celery stops the pool, and the worker must then exit. It used to hang in billiard's pool finalizer at
    interpreter exit, waiting for a queue lock a pool process had died holding (2 of 5 tries; CI left such workers
    behind); the worker command now leaves without those exit handlers."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    heartbeat = scratch / "itsm-triage-worker.heartbeat"
    env = _worker_env(tmp_path, scratch)
    hung = 0
    for _ in range(5):  # the race hit 2 of 5 tries before the fix
        heartbeat.unlink(missing_ok=True)
        proc = _start_worker(env, "--queues", "deliver", "--concurrency", "2", start_new_session=True)
        _wait_for(heartbeat.exists)
        time.sleep(1.5)  # the pool processes are up and waiting for work
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hung += 1
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert hung == 0
