"""The real service as subprocesses: `itsm-triage serve` (uvicorn) and `itsm-triage worker` (Celery prefork).

Settings travel as ITSM_* environment variables, exactly as in production. Each process gets its own session
(process group) so a test can SIGKILL a whole worker tree, or just one pool child, or freeze it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.reliability.harness.servers import descendants, free_port, wait_port

REPO = Path(__file__).resolve().parents[3]
JIRA_SECRET = "reliability-jira-secret"
SN_SECRET = "reliability-servicenow-secret"
BOT_ACCOUNT_ID = "62f0a1b2c3d4e5f607182930"  # the bot account of the contract fixtures


def service_env(
    *,
    database_url: str,
    broker_url: str,
    var_dir: Path,
    jira: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a service process: inherited PATH etc., minus any ITSM_* of the caller, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "ITSM_DATABASE_URL": database_url,
            "ITSM_BROKER_URL": broker_url,
            "ITSM_VAR_DIR": str(var_dir),
            "ITSM_JIRA__WEBHOOK_SECRET": JIRA_SECRET,
            "ITSM_SERVICENOW__WEBHOOK_SECRET": SN_SECRET,
            "ITSM_JIRA__ACCOUNT_ID": BOT_ACCOUNT_ID,
            "ITSM_MODEL__BACKEND": "fake",
            "ITSM_LOG__JSON_LOGS": "true",
            "ITSM_LOG__LEVEL": "INFO",
        }
    )
    for key, value in (jira or {}).items():
        env[f"ITSM_JIRA__{key.upper()}"] = str(value)
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


class ServiceProcess:
    """One `python -m service.cli ...` child with its log file; signals go to its process group."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], logdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        logdir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        """PID of the main process."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServiceProcess:
        """Spawn in a new session (own process group)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *self.args],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def alive(self) -> bool:
        """Whether the main process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def children(self) -> list[int]:
        """All descendant PIDs (the Celery pool children, the beat process)."""
        return descendants(self.pid) if self.alive() else []

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (kill -9 of main and children, or -STOP/-CONT)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=20)

    def terminate(self, timeout_s: float = 30.0) -> float:
        """SIGTERM (a graceful deploy); returns how long the shutdown took, SIGKILL if it overruns."""
        started = time.monotonic()
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return time.monotonic() - started

    def stop(self) -> None:
        """Finaliser: resume if frozen, kill the group, reap."""
        if self.proc is None:
            return
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass

    def log_text(self) -> str:
        """What the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, needle: str, *, timeout_s: float = 60.0, after: int = 0) -> None:
        """Wait until `needle` appears in the log past offset `after` (raises with the log tail otherwise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if needle in self.log_text()[after:]:
                return
            if not self.alive():
                break
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {needle!r} not logged; tail:\n{self.log_text()[-3000:]}")


class ApiProcess(ServiceProcess):
    """`itsm-triage serve` on a free port."""

    def __init__(self, env: Mapping[str, str], logdir: Path, *, port: int | None = None, name: str = "api") -> None:
        self.port = port or free_port()
        super().__init__(name, ["serve", "--host", "127.0.0.1", "--port", str(self.port)], env, logdir)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout_s: float = 60.0) -> ApiProcess:
        """Spawn and wait for /livez."""
        super().start()
        deadline = time.monotonic() + timeout_s
        wait_port(self.port, timeout_s=timeout_s)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/livez", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if not self.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"API did not become live; log tail:\n{self.log_text()[-3000:]}")


class WorkerProcess(ServiceProcess):
    """`itsm-triage worker --queues ...` (prefork pool)."""

    def __init__(
        self,
        env: Mapping[str, str],
        logdir: Path,
        *,
        queues: str = "triage,draft,deliver",
        beat: bool = False,
        concurrency: int = 1,
        name: str = "worker",
    ) -> None:
        args = ["worker", "--queues", queues, "--concurrency", str(concurrency)] + (["--beat"] if beat else [])
        super().__init__(name, args, env, logdir)
        self.concurrency = concurrency

    def start(self, *, timeout_s: float = 90.0) -> WorkerProcess:
        """Spawn and wait until Celery reports ready (consuming)."""
        offset = len(self.log_text())
        super().start()
        self.wait_log("ready", timeout_s=timeout_s, after=offset)
        return self

    def pool_children(self) -> list[int]:
        """PIDs of the prefork pool children (run the worker without --beat so no beat child is among them)."""
        return self.children()
