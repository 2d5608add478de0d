"""Two stages: reply drafts prepared after the labels (suggestion status, draft outbox)

Revision ID: 0003_two_stage_drafts
Revises: 0002_audit_append_only
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003_two_stage_drafts"
down_revision: str | None = "0002_audit_append_only"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing triages were drafted in one stage with their labels: their draft is "ready" when they have one.
    with op.batch_alter_table("triage") as batch:
        batch.add_column(sa.Column("draft_status", sa.String(length=20), nullable=False, server_default="none"))
        batch.add_column(sa.Column("draft_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("draft_lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("draft_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("draft_ready_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.execute("UPDATE triage SET draft_status = 'ready' WHERE draft_reply IS NOT NULL")
    with op.batch_alter_table("triage") as batch:
        batch.alter_column("draft_status", server_default=None)
        batch.alter_column("draft_attempts", server_default=None)
    op.create_index("ix_triage_draft_status", "triage", ["draft_status", "draft_lease_until"])


def downgrade() -> None:
    op.drop_index("ix_triage_draft_status", table_name="triage")
    with op.batch_alter_table("triage") as batch:
        batch.drop_column("draft_ready_at")
        batch.drop_column("draft_error")
        batch.drop_column("draft_lease_until")
        batch.drop_column("draft_attempts")
        batch.drop_column("draft_status")
