"""Named leases in the database: one retrain (or one registry check) at a time across processes and pods."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from service.db import session_scope
from service.domain.learning import LearningLease
from service.domain.tables import utcnow


class Busy(RuntimeError):
    """Another process holds the lease."""

    def __init__(self, name: str, holder: str, until: datetime | None) -> None:
        when = f", lease until {until:%Y-%m-%d %H:%M:%S} UTC" if until is not None else ""
        super().__init__(f"{name} is running elsewhere ({holder}{when})")
        self.holder = holder


def claim(engine: Engine, name: str, holder: str, seconds: float) -> bool:
    """Take the lease when it is free or expired (or already ours); False when someone else holds it."""
    try:
        with session_scope(engine) as session:
            row = session.get(LearningLease, name, with_for_update=True)
            now = utcnow()
            if row is None:
                session.add(LearningLease(name=name, holder=holder[:200], lease_until=now + timedelta(seconds=seconds)))
                return True
            until = _aware(row.lease_until)
            if until is not None and until > now and row.holder != holder:
                return False
            row.holder, row.lease_until = holder[:200], now + timedelta(seconds=seconds)
            session.add(row)
            return True
    except IntegrityError:  # another process inserted the row first: it holds the lease
        return False


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease back (only our own)."""
    with session_scope(engine) as session:
        row = session.get(LearningLease, name, with_for_update=True)
        if row is not None and row.holder == holder:
            row.lease_until = None
            session.add(row)


def holder_of(engine: Engine, name: str) -> tuple[str, datetime | None] | None:
    """Who holds the lease and until when (None when free)."""
    with session_scope(engine) as session:
        row = session.get(LearningLease, name)
        until = _aware(row.lease_until) if row is not None else None
        if row is None or until is None or until <= utcnow():
            return None
        return row.holder, until


@contextmanager
def held(engine: Engine, name: str, holder: str, seconds: float) -> Iterator[None]:
    """Hold the lease for the block; raises Busy when another process has it."""
    if not claim(engine, name, holder, seconds):
        who = holder_of(engine, name)
        raise Busy(name, who[0] if who else "another process", who[1] if who else None)
    try:
        yield
    finally:
        release(engine, name, holder)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; they are stored as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
