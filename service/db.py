"""Engine factory and session scope; works on SQLite (default) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from service.settings import Settings


def make_engine(settings: Settings, **overrides: Any) -> Engine:
    """Create the engine for settings.database_url (pre-ping so a restarted database is survived)."""
    url = make_url(settings.database_url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        # Bound every statement so a locked table turns into a 503 rather than a hung ack (RELIABILITY T15).
        timeout_ms = int(settings.api.request_timeout_s * 1000)
        kwargs["connect_args"] = {"connect_timeout": 3, "options": f"-c statement_timeout={timeout_ms}"}
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
        kwargs["pool_timeout"] = settings.api.request_timeout_s
    kwargs.update(overrides)
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets the API write while workers read; foreign keys are off by default in SQLite."""
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event open the transaction itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    """Take the write lock up front: a read-then-write transaction can otherwise fail with 'database is locked'."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
