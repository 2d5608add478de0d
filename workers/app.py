"""The Celery worker: queues, late acks, beat schedule, and per-process resources created after fork."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import weakref
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from celery import Celery, bootsteps
from celery.signals import worker_process_init, worker_process_shutdown
from sqlalchemy.engine import Engine

from service.db import make_engine
from service.domain.ports import TicketWriter, Triager
from service.queue import DELIVER_QUEUE, DRAFT_QUEUE, SWEEP_TASK, TRIAGE_QUEUE, declare_queues, enqueue, make_celery
from service.settings import Settings
from workers.delivery import DeliveryContext
from workers.drafts import DraftContext
from workers.knowledge import kb_beat_schedule, register_kb_tasks
from workers.learning import learning_beat_schedule, register_learning_tasks
from workers.memory_sync import MemorySync
from workers.pipeline import PipelineContext
from workers.retention import register_retention_tasks, retention_beat_schedule
from workers.tasks import register_tasks
from workers.watchdog import ConsumerWatchdog

if TYPE_CHECKING:
    from workers.adapter_sync import AdapterSync

log = structlog.get_logger(__name__)

SQLITE_BROKER_POLL_S = 0.1


class WorkerRuntime:
    """Per-process resources (engine, model, connectors), built lazily and rebuilt after fork."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.warm_model = False  # set by run_worker when this worker consumes the triage or draft queue
        self.warm_drafting = False  # ...and when it consumes the draft queue: compile drafting shapes at start
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._triager: Triager | None = None
        self._writers: dict[str, TicketWriter] = {}
        # one memory sync per loaded adapter (live, shadow; a new one after a swap starts from its own data)
        self._memory_syncs: weakref.WeakKeyDictionary[Any, MemorySync] = weakref.WeakKeyDictionary()
        self._adapters: AdapterSync | None = None  # the registry's adapters (the LLM backend only)

    def after_fork(self) -> None:
        """Drop anything inherited from the parent: connections and sockets must not be shared across fork."""
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._engine = None
        self._writers = {}
        self._triager = None
        self._memory_syncs = weakref.WeakKeyDictionary()
        self._adapters = None
        if self.warm_model:
            try:
                triager = self.triager()
                warm_up = getattr(triager, "warm_up", None)
                if self.warm_drafting and warm_up is not None:
                    log.info("drafting_compiled", seconds=round(float(warm_up()), 1))
                _touch(READY_FILE)  # the chart's readiness probe: this pod can serve
            except Exception as exc:  # noqa: BLE001  the task retries loading and fails its events visibly
                log.error("model_load_failed", error=f"{type(exc).__name__}: {exc}")

    def engine(self) -> Engine:
        """This process's engine."""
        if self._engine is None:
            self._engine = make_engine(self.settings)
        return self._engine

    def triager(self) -> Triager:
        """The model, loaded once per process on first use (never in the Celery parent); with the LLM backend the
        registry's live adapter, swapped for a newly promoted one between batches (this is called once a batch)."""
        with self._lock:
            if self._triager is None:
                if self.settings.model.backend == "hf":
                    from workers.adapter_sync import AdapterSync

                    self._adapters = AdapterSync(self.engine(), self.settings)
                    self._triager = self._adapters.start()
                else:
                    from workers.model_backend import load_triager

                    self._triager = load_triager(self.settings)
                log.info(
                    "model_loaded",
                    pid=os.getpid(),
                    backend=self.settings.model.backend,
                    adapter=getattr(self._triager, "adapter_version", None),
                )
            elif self._adapters is not None and self._adapters.refresh() and self._adapters.live is not None:
                self._triager = self._adapters.live.triager
                warm_up = getattr(self._triager, "warm_up", None)
                if self.warm_drafting and warm_up is not None:
                    log.info("drafting_compiled", seconds=round(float(warm_up()), 1))
            return self._triager

    def shadow(self) -> tuple[int, Triager] | None:
        """The registry's shadow adapter in this process (registry id, triager), if there is one."""
        with self._lock:
            return self._adapters.shadow_triager() if self._adapters is not None else None

    def learn(self, triager: Triager) -> object:
        """Reviewed tickets into this adapter's memory (each loaded adapter has its own sync state)."""
        sync = self._memory_syncs.get(triager)
        if sync is None:
            sync = self._memory_syncs[triager] = MemorySync(self.engine(), self.settings.model.memory_sync_s)
        return sync(triager)

    def writer(self, source: str) -> TicketWriter:
        """The connector for `source`, one per process (its HTTP client keeps connections alive)."""
        if source not in self._writers:
            from service.connectors import make_writer

            self._writers[source] = make_writer(source, self.settings)
        return self._writers[source]

    def enqueue(self, task_name: str, row_id: int, countdown: float | None) -> None:
        """Publish a task by name with the row id (and an optional delay)."""
        enqueue(self.app, task_name, row_id, countdown=countdown)

    def pipeline(self) -> PipelineContext:
        """Context for the triage flow (with the registry's shadow adapter, when there is one)."""
        return PipelineContext(
            self.engine(), self.settings, self.triager, self.enqueue, learn=self.learn, shadow=self.shadow
        )

    def drafts(self) -> DraftContext:
        """Context for the draft stage (it learns reviewed tickets too: sent replies are suggestions)."""
        return DraftContext(self.engine(), self.settings, self.triager, self.enqueue, learn=self.learn)

    def delivery(self) -> DeliveryContext:
        """Context for the delivery flow."""
        return DeliveryContext(self.engine(), self.settings, self.writer, self.enqueue)


# The chart's liveness probe fails a worker whose main loop stopped touching this file (helm/README.md).
HEARTBEAT_FILE = Path(tempfile.gettempdir()) / "itsm-triage-worker.heartbeat"
HEARTBEAT_INTERVAL_S = 10.0
# The model pools' readiness probe: a pool process touches it once the model is loaded (and drafting compiled); the
# worker removes it as it starts, since /tmp (an emptyDir) outlives a container restart.
READY_FILE = Path(tempfile.gettempdir()) / "itsm-triage-worker.ready"


def _touch(path: Path) -> None:
    """Touch a probe file; a full disk must not kill the worker, only fail its probe."""
    try:
        path.touch()
    except OSError as exc:
        log.warning("probe_file_failed", path=str(path), error=str(exc))


def _touch_heartbeat() -> None:
    """Mark the consumer loop alive."""
    _touch(HEARTBEAT_FILE)


class Heartbeat(bootsteps.StartStopStep):
    """Touches HEARTBEAT_FILE from the worker's own timer, so it stops when the main loop hangs."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def start(self, worker: Any) -> None:
        """Touch now and every HEARTBEAT_INTERVAL_S."""
        _touch_heartbeat()
        worker.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, _touch_heartbeat, priority=10)


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app with the tasks registered and the sweeper scheduled; loads no model."""
    app = make_celery(settings, name="itsm-worker")
    interval = settings.worker.sweep_interval_s
    app.conf.update(
        beat_schedule={
            "itsm-sweep": {
                "task": SWEEP_TASK,
                "schedule": float(interval),
                # Expiry keeps sweeps from piling up while no worker runs; polling brokers need slack.
                "options": {"queue": DELIVER_QUEUE, "expires": float(max(60, 3 * interval))},
            },
            **kb_beat_schedule(settings),
            **retention_beat_schedule(settings),
            **learning_beat_schedule(settings),
        },
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    runtime = WorkerRuntime(app, settings)
    register_tasks(app, runtime)
    register_kb_tasks(app, runtime)
    register_retention_tasks(app, runtime)
    register_learning_tasks(app, runtime)
    app.steps["worker"].add(Heartbeat)
    watchdog = type("ConsumerWatchdog", (ConsumerWatchdog,), {"stall_s": float(settings.worker.stall_timeout_s)})
    app.steps["consumer"].add(watchdog)
    app.itsm_runtime = runtime  # type: ignore[attr-defined]

    def _init(**_: Any) -> None:
        runtime.after_fork()

    def _shutdown(**_: Any) -> None:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    # weak=False: the closures would otherwise be garbage-collected and never fire.
    worker_process_init.connect(_init, weak=False)
    worker_process_shutdown.connect(_shutdown, weak=False)
    return app


def run_worker(settings: Settings, *, queues: list[str], concurrency: int, beat: bool) -> None:
    """Run a worker in the foreground (the `itsm-triage worker` command); returns when it shuts down."""
    from workers.metrics import enable_multiprocess, serve_metrics

    _tune_sqlite_broker(settings.broker_url)
    port = settings.worker.metrics_port
    if port:
        enable_multiprocess(settings.var_dir / "prometheus" / str(os.getpid()))
    app = make_worker_app(settings)
    declare_queues(app)
    runtime: WorkerRuntime = app.itsm_runtime  # type: ignore[attr-defined]
    runtime.warm_model = TRIAGE_QUEUE in queues or DRAFT_QUEUE in queues
    runtime.warm_drafting = DRAFT_QUEUE in queues
    READY_FILE.unlink(missing_ok=True)  # not ready until a pool process has the model
    if port:
        serve_metrics(port, make_engine(settings))
        log.info("metrics_serving", port=port)
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--loglevel={settings.log.level}",
        f"--hostname=itsm-{'-'.join(queues)}-{os.getpid()}@%h",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
    ]
    beat_proc = None
    if beat:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        schedule = settings.var_dir / "celerybeat-schedule"
        if settings.broker_url.startswith("sqla+"):
            from workers import beat as beat_process  # the embedded beat's publishes fail there (workers/beat.py)

            beat_proc = beat_process.start(schedule)
        else:
            argv += ["--beat", f"--schedule={schedule}"]
    log.info("worker_starting", queues=queues, concurrency=concurrency, beat=beat, own_beat_process=bool(beat_proc))
    try:
        app.worker_main(argv)
    finally:
        if beat_proc is not None:
            beat_process.stop(beat_proc)


def _tune_sqlite_broker(broker_url: str) -> None:
    """Make the embedded SQLite broker keep up with the model (bench/pipeline.py measures it).

    Its consumers poll: kombu's default of one poll per second when a queue looks empty caps delivery at a few
    messages per second. And WAL mode (persistent in the file) stops publishers and consumers blocking each
    other on every message.
    """
    prefix = "sqla+sqlite:///"
    if not broker_url.startswith(prefix) or broker_url.endswith(":memory:"):
        return
    from kombu.transport import sqlalchemy as kombu_sqla

    # Not a transport option: the SQLAlchemy transport passes unknown options on to create_engine().
    kombu_sqla.Transport.polling_interval = SQLITE_BROKER_POLL_S
    path = Path(broker_url.removeprefix(prefix))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(sqlite3.connect(path, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:  # another process holds it in a transaction: keep the current mode
        log.warning("broker_wal_not_set", error=str(exc))
