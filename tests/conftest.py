"""Shared fixtures: real SQLite and PostgreSQL databases (migrated with Alembic), settings, fixture files."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from service.db import make_engine
from service.migrate import upgrade
from service.settings import Settings
from tests.fakes.fixtures import fake_jira, fake_servicenow  # noqa: F401  (fake ITSM servers for every test)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ITSM_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = SHARED / "contracts" / "fixtures"
PG_ADMIN_URL = os.environ.get("ITSM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

JIRA_SECRET = "test-jira-webhook-secret"
SN_SECRET = "test-servicenow-secret"


def fixture_bytes(name: str) -> bytes:
    """Exact bytes of a contract fixture (signatures cover these)."""
    return (FIXTURES / name).read_bytes()


def fixture_headers(name: str) -> dict[str, str]:
    """The recorded headers of a fixture delivery."""
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session, migrated to head."""
    name = f"itsm_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is started by .ci/run; locally it may be absent
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(Settings(database_url=url))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on a fresh, migrated SQLite file and on (a truncated) PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'itsm.db'}"
        upgrade(Settings(database_url=url))
        return url
    url: str = request.getfixturevalue("pg_database_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: real database, fixture secrets, embedded broker in tmp."""
    return Settings(
        database_url=database_url,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        var_dir=tmp_path / "var",
        jira={"webhook_secret": JIRA_SECRET, "account_id": "62f0a1b2c3d4e5f607182930"},
        servicenow={"webhook_secret": SN_SECRET},
        model={"backend": "fake"},
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """Engine over the test database."""
    eng = make_engine(settings)
    yield eng
    eng.dispose()
