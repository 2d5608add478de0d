"""`itsm-triage run | serve | worker | sweep | db upgrade`: the processes of the service."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import click

from service.child_process import preexec
from service.devsecrets import ensure_dev_secrets
from service.queue import QUEUES
from service.settings import Settings


def register(group: click.Group) -> None:
    """Attach this module's commands to the root group."""
    group.add_command(run)
    group.add_command(serve)
    group.add_command(worker)
    group.add_command(sweep)
    group.add_command(db)


# One place for the server settings, so bench/ingest.py runs its bare baseline under exactly the same ones.
UVICORN_OPTIONS: dict[str, object] = {
    "log_config": None,
    "access_log": False,
    "timeout_keep_alive": 5,
    "timeout_graceful_shutdown": 10,
    "limit_concurrency": 2048,
}


def _serve_api(settings: Settings, host: str, port: int) -> None:
    """Run uvicorn on the app (migrating first unless disabled)."""
    import uvicorn

    from service.api.app import create_app
    from service.logging import configure_logging
    from service.migrate import upgrade

    configure_logging(settings)
    if settings.api.migrate_on_start:
        upgrade(settings)
    if settings.api.processes > 1:
        if settings.database_url.startswith("sqlite"):
            raise click.UsageError("ITSM_API__PROCESSES > 1 needs PostgreSQL: SQLite admits one writer process")
        # Each process builds its own app from the environment (uvicorn spawns them); the CLI's resolved values
        # (generated secrets, paths) travel as ITSM_* variables, and the metrics of all of them meet in one directory.
        os.environ.update(_settings_env(settings))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = _fresh_metrics_dir(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        uvicorn.run(
            "service.api.app:create_app_from_env",
            factory=True,
            workers=settings.api.processes,
            host=host,
            port=port,
            **UVICORN_OPTIONS,  # type: ignore[arg-type]
        )
        return
    uvicorn.run(create_app(settings), host=host, port=port, **UVICORN_OPTIONS)  # type: ignore[arg-type]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--dev", is_flag=True, help="Allow starting without webhook secrets (development only).")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, dev: bool) -> None:
    """Serve the API and review UI (production: secrets required)."""
    if not (settings.jira.webhook_secret or settings.servicenow.webhook_secret) and not (dev or settings.api.dev_mode):
        raise click.UsageError(
            "no webhook secret is configured: set ITSM_JIRA__WEBHOOK_SECRET and/or ITSM_SERVICENOW__WEBHOOK_SECRET "
            "(or pass --dev / ITSM_API__DEV_MODE=true for a development server)"
        )
    _serve_api(settings, host, port)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.pass_obj
def run(settings: Settings, host: str, port: int) -> None:
    """Everything in one process tree on embedded defaults: API + review UI + workers (+ sweeper).

    Three worker processes: labels, write-backs (with the sweeper), and reply drafts, so a draft that takes seconds
    on a CPU never delays the next ticket's labels, nor a backlog of labels their notes (bench/e2e.py measures it);
    a fourth for scheduled retrains when ITSM_LEARNING__SCHEDULE is set."""
    settings, generated = ensure_dev_secrets(settings)
    if generated:
        click.echo(
            click.style("Development mode: generated webhook secrets (kept in ", fg="yellow")
            + str(settings.var_dir / "dev-secrets.env")
            + click.style("):", fg="yellow")
        )
        for name, value in generated.items():
            click.echo(f"  {name}={value}")
    from service.migrate import upgrade

    upgrade(settings)
    env = {**os.environ, **_settings_env(settings)}
    # On one machine's CPUs the two workers share the cores: the draft worker gets one torch thread so a draft in
    # progress leaves the labels a core (torch threads spinning on busy cores slowed a 1-ticket label batch from
    # 0.1 s to 7-12 s, measured), and OpenMP threads sleep instead of spinning while they wait.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Write-backs run in a worker of their own (no model, a few processes, the sweeper's beat): a note must not wait
    # for the label worker to finish its backlog of batches (a 40-ticket burst's notes waited ~9 s, measured).
    groups: list[tuple[list[str], dict[str, str]]] = [
        (["triage"], {}),
        (["deliver", "--concurrency", "4", "--beat"], {}),
    ]
    if settings.model.draft_replies:
        # two draft processes of one torch thread each: while one writes an LLM draft (seconds on a CPU), the other
        # stores the past replies queued behind it (bench/e2e.py: drafts p50 12.2 -> 11.5 s, p95 27.0 -> 22.1 s)
        threads = os.environ.get("ITSM_TORCH_THREADS", "1")
        groups.append((["draft", "--concurrency", "2"], {"ITSM_TORCH_THREADS": threads}))
    if settings.learning.schedule:
        # scheduled retrains (ITSM_LEARNING__SCHEDULE) in a worker of their own: minutes of training must not
        # hold up labels or drafts; the deliver worker's beat enqueues them
        groups.append((["learn"], {}))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--queues", *args],
            env={**env, **extra},
            # the worker gets SIGTERM when `run` exits, even when uvicorn re-raises SIGTERM past our `finally`
            preexec_fn=preexec(),
        )
        for args, extra in groups
    ]
    click.echo(f"API and review UI on http://{host}:{port}/review (webhooks: /webhooks/jira, /webhooks/servicenow)")
    try:
        _serve_api(settings, host, port)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _fresh_metrics_dir(given: str | None) -> str:
    """The multiprocess metrics directory, emptied (values from an earlier run must not be added in)."""
    import tempfile
    from pathlib import Path

    if not given:
        return tempfile.mkdtemp(prefix="itsm-api-metrics-")
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(path)


def _settings_env(settings: Settings) -> dict[str, str]:
    """The generated secrets and resolved paths, handed to child processes as ITSM_* variables."""
    env = {
        "ITSM_DATABASE_URL": settings.database_url,
        "ITSM_BROKER_URL": settings.broker_url,
        "ITSM_VAR_DIR": str(settings.var_dir),
    }
    if settings.jira.webhook_secret:
        env["ITSM_JIRA__WEBHOOK_SECRET"] = settings.jira.webhook_secret.get_secret_value()
    if settings.servicenow.webhook_secret:
        env["ITSM_SERVICENOW__WEBHOOK_SECRET"] = settings.servicenow.webhook_secret.get_secret_value()
    return env


@click.command()
@click.option("--queues", default="triage,draft,deliver", show_default=True, help="Comma-separated queues to consume.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None, help="Processes (default: settings).")
@click.option("--beat", is_flag=True, help="Also run the periodic sweeper in this worker.")
@click.pass_obj
def worker(settings: Settings, queues: str, concurrency: int | None, beat: bool) -> None:
    """Run a Celery worker (the model is loaded once per process, after fork)."""
    from service.logging import configure_logging
    from workers.app import run_worker

    configure_logging(settings)
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = set(names) - set(QUEUES)
    if not names or unknown:
        raise click.BadParameter(
            f"unknown queue(s) {sorted(unknown)}; use any of {', '.join(QUEUES)}", param_hint="--queues"
        )
    code: int = 0
    try:
        run_worker(settings, queues=names, concurrency=concurrency or settings.worker.concurrency, beat=beat)
    except SystemExit as exc:  # Celery ends its worker with sys.exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # Leave without the interpreter's exit handlers: Celery has already stopped its pool, and billiard's pool
    # finalizer, run again at exit, waits for the task queue's lock, which a pool process killed mid-read (OOM,
    # SIGKILL) still holds: the worker hung forever after SIGTERM (found as orphans after CI; test_app_config.py).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


@click.command()
@click.option("--loop", is_flag=True, help="Keep sweeping every worker.sweep_interval_s (else sweep once).")
@click.pass_obj
def sweep(settings: Settings, loop: bool) -> None:
    """Re-enqueue work stuck past its lease and dead-letter what exhausted its attempts."""
    from service.logging import configure_logging
    from workers.sweeper import sweep_once

    configure_logging(settings)
    while True:
        report = sweep_once(settings)
        click.echo(str(report))
        if not loop:
            return
        time.sleep(settings.worker.sweep_interval_s)


@click.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(settings: Settings, revision: str) -> None:
    """Apply pending Alembic migrations."""
    from service.migrate import upgrade

    upgrade(settings, revision)
    click.echo(f"database at {revision}: {_redacted(settings.database_url)}")


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
