"""Real processes for worker tests: a throwaway redis-server and a Celery worker (`python -m workers`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server on a free port (never the shared one on 6379); yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class WorkerProcess:
    """A Celery worker started as its own process group; stop() ends it and every pool child."""

    def __init__(self, env: dict[str, str], *, queues: str, concurrency: int, beat: bool, log: Path) -> None:
        self.log = log
        args = [sys.executable, "-m", "workers", "--queues", queues, "--concurrency", str(concurrency)]
        if beat:
            args.append("--beat")
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=full_env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """Pids of the pool children (from /proc, no extra dependency)."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == self.pid:
                    out.append(int(entry.name))
        return out

    def pool_children(self) -> list[int]:
        """Live pool children: those that logged loading the model (the embedded beat process never does)."""
        import re

        logged = {int(m) for m in re.findall(r"model_loaded.*?pid=(\d+)", self.log.read_text(errors="replace"))}
        return [pid for pid in self.children() if pid in logged]

    def stop(self, timeout: float = 15) -> None:
        """Warm shutdown (TERM), then KILL the whole group if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self._out.close()

    def tail(self, n: int = 60) -> str:
        """The last lines of the worker's log (shown when a test fails)."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    """Poll `check` until true; fail with the worker's log tail after `timeout` seconds (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(
                f"worker exited ({worker.proc.returncode}) while waiting for {what}:\n" + worker.tail()
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{worker.tail()}" if worker else ""))
