"""Knowledge-base tables: synced articles, their passages, and each source's sync state.

The full-text indexes over passages and tickets are backend-specific objects made by migration 0005 (an FTS5
table on SQLite, a tsvector column with a GIN index on PostgreSQL); they are not SQLModel tables, so
`include_schema_name` keeps Alembic's comparison from reading them as drift.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# Search objects migration 0005 creates outside the SQLModel metadata (FTS5 also makes <name>_data, _idx, ...).
SEARCH_TABLE_PREFIXES = ("kb_passage_fts", "ticket_fts")
SEARCH_COLUMNS = frozenset({("kb_passage", "search_vector")})
SEARCH_INDEXES = frozenset({"ix_kb_passage_search_vector", "ix_ticket_search"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def include_schema_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Alembic `include_name` hook: leave the backend-specific search objects out of autogenerate/compare."""
    if name is None:
        return True
    if type_ == "table":
        return not name.startswith(SEARCH_TABLE_PREFIXES)
    if type_ == "column":
        return (str(parent_names.get("table_name")), name) not in SEARCH_COLUMNS
    if type_ == "index":
        return name not in SEARCH_INDEXES
    return True


class KbArticle(SQLModel, table=True):
    """One published article of a knowledge base, as plain text (its passages are what retrieval finds)."""

    __tablename__ = "kb_article"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_kb_article_source_external"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=32, description="servicenow | confluence")
    external_id: str = Field(max_length=200, description="kb_knowledge sys_id / Confluence page id")
    number: str = Field(default="", max_length=100, description="KB0010001 / the page id")
    collection: str = Field(default="", max_length=200, description="knowledge base sys_id / space key")
    title: str = Field(default="", max_length=1000)
    url: str | None = Field(default=None, max_length=2000)
    language: str = Field(default="en", max_length=16)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    version: str = Field(default="", max_length=100, description="what changes on every edit (mod count / version)")
    updated_at_source: datetime | None = None
    synced_at: datetime = Field(default_factory=_utcnow)


class KbPassage(SQLModel, table=True):
    """A retrievable piece of an article (a few paragraphs), searched with its article's title."""

    __tablename__ = "kb_passage"
    __table_args__ = (
        UniqueConstraint("article_id", "position", name="uq_kb_passage_article_position"),
        Index("ix_kb_passage_ts_config", "ts_config"),
    )

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(foreign_key="kb_article.id", index=True)
    position: int = 0
    title: str = Field(default="", max_length=1000)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    language: str = Field(default="en", max_length=16)
    ts_config: str = Field(default="simple", max_length=32, description="PostgreSQL text search configuration")
    n_terms: int = Field(default=0, description="indexed terms (BM25 document length)")


class KbSyncState(SQLModel, table=True):
    """Per knowledge-base source: incremental cursor, lease against overlapping syncs, last outcome."""

    __tablename__ = "kb_sync_state"

    source: str = Field(primary_key=True, max_length=32)
    cursor: str | None = Field(default=None, max_length=200, description="ServiceNow: last sys_updated_on read")
    lease_until: datetime | None = None
    last_started_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: datetime | None = None
    errors_total: int = 0
    articles: int = 0
    added_total: int = 0
    updated_total: int = 0
    removed_total: int = 0
