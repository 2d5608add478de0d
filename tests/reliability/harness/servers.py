"""Throwaway Redis and PostgreSQL server *processes* on free loopback ports (never the shared 6379/5432).

Fault tests crash, freeze and restart these; the shared development servers are never touched.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SHARED_PORTS = frozenset({5432, 6379})


def free_port() -> int:
    """An unused TCP port on loopback (never one of the shared servers' ports)."""
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in SHARED_PORTS:
            return port
    raise RuntimeError("no free port")


def wait_port(port: int, *, timeout_s: float = 20.0, up: bool = True) -> None:
    """Wait until something listens on 127.0.0.1:port (or, with up=False, until nothing does)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not {'up' if up else 'down'} within {timeout_s} s")


class RedisServer:
    """`redis-server` on a free port with no RDB snapshots and, optionally, AOF everysec (as production)."""

    def __init__(self, workdir: Path, *, aof: bool = True, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Broker URL for this server (db 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart after a crash, replaying the AOF) and wait until it accepts connections."""
        assert self.port not in SHARED_PORTS
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else ["--appendonly", "no"]
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_port(self.port)
        self._wait_loaded()
        return self

    def _wait_loaded(self, timeout_s: float = 20.0) -> None:
        """Redis answers LOADING while it replays the AOF; wait for PONG."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=5, check=False
            )
            if out.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise TimeoutError("redis did not finish loading")

    def shutdown(self) -> None:
        """Graceful stop (the AOF is flushed)."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=10, check=False)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: up to one second of AOF writes may vanish."""
        self.signal(signal.SIGKILL)
        self._reap()

    def signal(self, sig: int) -> None:
        """Send a signal (SIGSTOP to hang it, SIGCONT to resume)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        wait_port(self.port, up=False)

    def stop(self) -> None:
        """Finaliser: resume if frozen, then kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary (Debian keeps them under /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else (shutil.which(name) or name)


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PostgresServer:
    """A private PostgreSQL cluster (initdb into `workdir`) on a free port, with its socket in the same dir."""

    _template: Path | None = None

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.dir = workdir
        self.data = workdir / "pgdata"
        self.port = port or free_port()

    @property
    def admin_url(self) -> str:
        """URL of the `postgres` database (superuser, trust auth on loopback)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "itsm") -> str:
        """URL of a database on this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PostgresServer:
        """initdb once per test run, then copy the cluster (a copy takes ~0.1 s, initdb a few seconds)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if PostgresServer._template is None or not PostgresServer._template.exists():
            template = Path(tempfile.gettempdir()) / f"itsm-rel-pg-template-{os.getpid()}"
            atexit.register(shutil.rmtree, template, True)
            shutil.rmtree(template, ignore_errors=True)
            template.mkdir(parents=True)
            _chown(template)
            subprocess.run(
                _as_postgres([_pg_bin("initdb"), "-D", str(template), "-A", "trust", "-U", "postgres", "--no-sync"]),
                check=True,
                capture_output=True,
                timeout=120,
            )
            PostgresServer._template = template
        shutil.copytree(PostgresServer._template, self.data, symlinks=True)
        os.chmod(self.data, 0o700)
        _chown(self.dir)
        return self

    def start(self) -> PostgresServer:
        """pg_ctl start on our port, loopback only, socket in our dir; waits until it accepts connections."""
        assert self.port not in SHARED_PORTS
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres(
                [_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-o", opts, "-w", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_port(self.port)
        return self

    def create_database(self, name: str = "itsm") -> str:
        """CREATE DATABASE and return its URL."""
        subprocess.run(
            _as_postgres([_pg_bin("createdb"), "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", name]),
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.url(name)

    def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop (-m immediate is a crash: no checkpoint, recovery on the next start)."""
        if not (self.data / "postmaster.pid").exists():
            return
        self.signal(signal.SIGCONT)
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        wait_port(self.port, up=False)

    def pid(self) -> int | None:
        """PID of the postmaster, from postmaster.pid."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def signal(self, sig: int) -> None:
        """Signal the postmaster and all its backends (SIGSTOP freezes the whole cluster)."""
        pid = self.pid()
        if pid is None:
            return
        for child in [pid, *_children(pid)]:
            try:
                os.kill(child, sig)
            except ProcessLookupError:
                pass


def _chown(path: Path) -> None:
    """Hand a directory to the postgres user when we run as root."""
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), "postgres", "postgres")


def _children(pid: int) -> list[int]:
    """Direct children of a process, from /proc (no psutil dependency)."""
    out: list[int] = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(p) for p in Path(task).read_text().split()]
        except OSError:
            continue
    return out


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS KiB) of one process, from /proc (raises OSError when it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    rss = next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    return cpu, rss


def tree_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS KiB) of a process and its descendants (uvicorn or Celery pool processes); a process
    that exits between the reads is left out, the root's absence raises OSError."""
    cpu, rss = proc_stat(pid)
    for child in descendants(pid):
        try:
            c, r = proc_stat(child)
        except OSError:
            continue
        cpu, rss = cpu + c, rss + r
    return cpu, rss


def descendants(pid: int) -> list[int]:
    """All descendants of a process, depth first."""
    out: list[int] = []
    for child in _children(pid):
        out += [child, *descendants(child)]
    return out
