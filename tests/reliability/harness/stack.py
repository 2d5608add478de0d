"""One whole service on loopback: private PostgreSQL + Redis, fake Jira, the API and a worker as subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.migrate import upgrade
from service.settings import Settings
from tests.fakes import FakeJira
from tests.reliability.harness.ledger import Ledger
from tests.reliability.harness.proxy import FaultProxy
from tests.reliability.harness.servers import PostgresServer, RedisServer
from tests.reliability.harness.service import ApiProcess, WorkerProcess, service_env

# Lines worth keeping in a failure message whatever scrolled past: structlog JSON levels and Python tracebacks.
_ALARM = re.compile(
    r'"level": "(?:warning|error|critical)"|Traceback \(most recent call last\)|^\w*(?:Error|Exception):'
)


def make_workdir(prefix: str = "itsm-rel-") -> Path:
    """A world-traversable temp dir (pytest's tmp_path is 0700, which the postgres user cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


class Stack:
    """Build with the knobs a fault test needs; `close()` (or the context manager) tears everything down.

    `db_proxy` / `redis_proxy` put a FaultProxy between the service processes and the server, so latency,
    blackholes and resets can be injected without touching the server itself.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        redis_aof: bool = True,
        db_proxy: bool = False,
        redis_proxy: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.dir = workdir or make_workdir()
        self._own_dir = workdir is None
        self.pg = PostgresServer(self.dir / "pg")
        self.redis = RedisServer(self.dir / "redis", aof=redis_aof)
        self.jira = FakeJira()
        self.jira.auto_create_issues = True
        self.db_proxy: FaultProxy | None = None
        self.redis_proxy: FaultProxy | None = None
        self._want_db_proxy, self._want_redis_proxy = db_proxy, redis_proxy
        self.extra_env = dict(env or {})
        self.processes: list[Any] = []
        self.apis: list[ApiProcess] = []
        self.workers: list[WorkerProcess] = []
        self.database_url = ""
        self.ledger: Ledger | None = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> Stack:
        """Servers first (PostgreSQL migrated to head), then the fake Jira; service processes on demand."""
        try:
            self.pg.init().start()
            direct_url = self.pg.create_database()
            upgrade(Settings(database_url=direct_url))
            self.ledger = Ledger(direct_url)
            self.database_url = direct_url
            if self._want_db_proxy:
                self.db_proxy = FaultProxy(self.pg.port).start()
                self.database_url = direct_url.replace(f":{self.pg.port}/", f":{self.db_proxy.port}/")
            self.redis.start()
            self.broker_url = self.redis.url
            if self._want_redis_proxy:
                self.redis_proxy = FaultProxy(self.redis.port).start()
                self.broker_url = self.redis.url.replace(f":{self.redis.port}/", f":{self.redis_proxy.port}/")
            self.jira.start()
        except BaseException:
            self.close()
            raise
        return self

    def env(self, **overrides: str) -> dict[str, str]:
        """ITSM_* environment for a service process of this stack."""
        jira = {"base_url": self.jira.url, "email": self.jira.email, "api_token": self.jira.api_token}
        return service_env(
            database_url=self.database_url,
            broker_url=self.broker_url,
            var_dir=self.dir / "var",
            jira=jira,
            extra={**self.extra_env, **overrides},
        )

    def api(self, **env: str) -> ApiProcess:
        """Start an API process (waits for /livez)."""
        proc = ApiProcess(self.env(**env), self.dir / "logs", name=f"api-{len(self.processes)}")
        self.processes.append(proc)
        self.apis.append(proc)
        return proc.start()

    def worker(
        self,
        *,
        queues: str = "triage,draft,deliver",
        beat: bool = False,
        concurrency: int = 1,
        timeout_s: float = 90.0,
        **env: str,
    ) -> WorkerProcess:
        """Start a worker (waits for Celery's ready line)."""
        proc = WorkerProcess(
            self.env(**env),
            self.dir / "logs",
            queues=queues,
            beat=beat,
            concurrency=concurrency,
            name=f"worker-{len(self.processes)}",
        )
        self.processes.append(proc)
        self.workers.append(proc)
        return proc.start(timeout_s=timeout_s)

    def sweeper(self, **env: str) -> WorkerProcess:
        """The production sweeper topology (helm chart): `worker --queues deliver --beat`, its own process tree,
        so killing the triage worker leaves it running."""
        proc = WorkerProcess(
            self.env(**env), self.dir / "logs", queues="deliver", beat=True, name=f"sweeper-{len(self.processes)}"
        )
        self.processes.append(proc)
        return proc.start()

    @property
    def url(self) -> str:
        """Base URL of the first API process."""
        return self.apis[0].url

    def logs(self) -> str:
        """Every service log, for failure messages: its last warnings and errors (which a busy log pushes out of
        the tail: the one CI failure of T23 lost its cause that way), then its tail."""
        parts = []
        for p in self.processes:
            text = p.log_text()
            alarms = [line[:600] for line in text.splitlines() if _ALARM.search(line)][-15:]
            head = f"---- {len(alarms)} last warnings/errors\n" + "\n".join(alarms) + "\n---- tail\n" if alarms else ""
            parts.append(f"==== {p.name}\n{head}{text[-4000:]}")
        return "\n".join(parts)

    def logs_full(self) -> str:
        """Every service log in full (for secret-leak checks)."""
        return "\n".join(p.log_text() for p in self.processes)

    def close(self) -> None:
        """Stop processes, proxies, fake and servers; remove the work dir."""
        for proc in reversed(self.processes):
            proc.stop()
        for proxy in (self.db_proxy, self.redis_proxy):
            if proxy is not None:
                proxy.stop()
        if self.ledger is not None:
            self.ledger.close()
        self.jira.stop()
        self.redis.stop()
        self.pg.stop()
        if self._own_dir and not os.environ.get("ITSM_KEEP_RELIABILITY_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)
