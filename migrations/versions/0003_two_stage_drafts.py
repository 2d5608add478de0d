"""Two stages: reply drafts prepared after the labels (suggestion status, draft outbox)

Revision ID: 0003_two_stage_drafts
Revises: 0002_audit_append_only
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0003_two_stage_drafts"
down_revision: str | None = "0002_audit_append_only"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
