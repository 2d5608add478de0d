"""The Alembic migrations build exactly the schema the SQLModel tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import service.domain.tables  # noqa: F401
from service.domain.knowledge import include_schema_name
from service.migrate import current_heads


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"include_name": include_schema_name}), SQLModel.metadata
        )
    engine.dispose()
    assert diff == [], f"tables and migrations differ; add a revision: {diff}"


def test_migrations_have_a_single_head() -> None:
    assert len(current_heads()) == 1
