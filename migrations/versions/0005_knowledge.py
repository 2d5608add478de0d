"""Knowledge base: articles, passages, full-text index; similar tickets

Revision ID: 0005_knowledge
Revises: 0004_safety_at_rest
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005_knowledge"
down_revision: str | None = "0004_safety_at_rest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tickets are indexed before anyone knows their language (triage finds it): 'simple' on PostgreSQL, the porter
# tokenizer on SQLite.
_TICKET_DOC = "to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || coalesce(body, ''))"


def upgrade() -> None:
    op.create_table(
        "kb_article",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("number", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("collection", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("updated_at_source", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("synced_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "external_id", name="uq_kb_article_source_external"),
    )
    op.create_table(
        "kb_passage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("ts_config", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("n_terms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["kb_article.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("article_id", "position", name="uq_kb_passage_article_position"),
    )
    with op.batch_alter_table("kb_passage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_passage_article_id"), ["article_id"], unique=False)
        batch_op.create_index("ix_kb_passage_ts_config", ["ts_config"], unique=False)
    op.create_table(
        "kb_sync_state",
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("cursor", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_success_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("errors_total", sa.Integer(), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False),
        sa.Column("added_total", sa.Integer(), nullable=False),
        sa.Column("updated_total", sa.Integer(), nullable=False),
        sa.Column("removed_total", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    with op.batch_alter_table("suggestion", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sources", sa.JSON(), nullable=True))

    if op.get_bind().dialect.name == "postgresql":
        # The passage's own configuration (english, german, ...) stems it; the trigger keeps the vector current.
        op.execute("ALTER TABLE kb_passage ADD COLUMN search_vector tsvector")
        op.execute(
            "CREATE FUNCTION kb_passage_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.search_vector := to_tsvector(NEW.ts_config::regconfig, NEW.title || ' ' || NEW.text); "
            "RETURN NEW; END $$"
        )
        op.execute(
            "CREATE TRIGGER kb_passage_search_vector BEFORE INSERT OR UPDATE OF title, text, ts_config "
            "ON kb_passage FOR EACH ROW EXECUTE FUNCTION kb_passage_search_vector()"
        )
        op.execute("CREATE INDEX ix_kb_passage_search_vector ON kb_passage USING gin (search_vector)")
        op.execute(f"CREATE INDEX ix_ticket_search ON ticket USING gin ({_TICKET_DOC})")
    else:
        # Passages: terms analysed in Python (snowball stem of the passage's language), written with the row.
        op.execute("CREATE VIRTUAL TABLE kb_passage_fts USING fts5(terms, tokenize='unicode61 remove_diacritics 2')")
        # Tickets: an external-content index kept in step by triggers (any writer, including erasure).
        op.execute(
            "CREATE VIRTUAL TABLE ticket_fts USING fts5(subject, body, content='ticket', content_rowid='id', "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER ticket_fts_ai AFTER INSERT ON ticket BEGIN "
            "INSERT INTO ticket_fts(rowid, subject, body) VALUES (new.id, new.subject, new.body); END"
        )
        op.execute(
            "CREATE TRIGGER ticket_fts_ad AFTER DELETE ON ticket BEGIN "
            "INSERT INTO ticket_fts(ticket_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, old.body); "
            "END"
        )
        op.execute(
            "CREATE TRIGGER ticket_fts_au AFTER UPDATE OF subject, body ON ticket BEGIN "
            "INSERT INTO ticket_fts(ticket_fts, rowid, subject, body) VALUES ('delete', old.id, old.subject, old.body); "
            "INSERT INTO ticket_fts(rowid, subject, body) VALUES (new.id, new.subject, new.body); END"
        )
        op.execute("INSERT INTO ticket_fts(ticket_fts) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_ticket_search")
        op.execute("DROP TRIGGER IF EXISTS kb_passage_search_vector ON kb_passage")
        op.execute("DROP FUNCTION IF EXISTS kb_passage_search_vector()")
    else:
        for name in ("ai", "ad", "au"):
            op.execute(f"DROP TRIGGER IF EXISTS ticket_fts_{name}")
        op.execute("DROP TABLE IF EXISTS ticket_fts")
        op.execute("DROP TABLE IF EXISTS kb_passage_fts")
    with op.batch_alter_table("suggestion", schema=None) as batch_op:
        batch_op.drop_column("sources")
    op.drop_table("kb_sync_state")
    with op.batch_alter_table("kb_passage", schema=None) as batch_op:
        batch_op.drop_index("ix_kb_passage_ts_config")
        batch_op.drop_index(batch_op.f("ix_kb_passage_article_id"))
    op.drop_table("kb_passage")
    op.drop_table("kb_article")
