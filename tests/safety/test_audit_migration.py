"""Migration 0004: audit rows written before it held draft / reply / reason text; it replaces those by digests
once, and the audit log stays append-only afterwards (on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from service.domain.privacy import text_digest
from service.migrate import upgrade
from service.settings import Settings
from tests.conftest import PG_ADMIN_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (not migrated), so the test can stop at revision 0003."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    name = f"itsm_audit_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_old_audit_text_becomes_digests_and_the_log_stays_append_only(fresh_url: str) -> None:
    settings = Settings(database_url=fresh_url)
    upgrade(settings, "0003_two_stage_drafts")
    engine = create_engine(fresh_url)
    before = {"status": "pending", "version": 0, "draft": "Dear Dana, your VPN ..."}
    after = {"status": "approved", "final_reply": "Dear Dana, fixed.", "edited": True}
    with engine.begin() as conn:
        for action, b, a in [("approved", before, after), ("login", None, {"via": "password"})]:
            conn.execute(
                text(
                    "INSERT INTO audit_entry (at, actor, action, target_type, target_id, before, after)"
                    " VALUES (CURRENT_TIMESTAMP, 'agent', :action, 'suggestion', '1', :b, :a)"
                ),
                {"action": action, "b": json.dumps(b) if b else None, "a": json.dumps(a)},
            )
    upgrade(settings)
    with engine.connect() as conn:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute(text("SELECT action, before, after FROM audit_entry"))}
    b, a = (json.loads(v) if isinstance(v, str) else v for v in rows["approved"])
    assert b["draft"] == text_digest(before["draft"]) and a["final_reply"] == text_digest(after["final_reply"])
    assert a["edited"] is True and "Dana" not in json.dumps(rows, default=str)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET actor = 'x'"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry"))
    engine.dispose()
