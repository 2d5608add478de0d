"""Safety at rest: redacted text, encrypted raw payloads, retention and erasure

Revision ID: 0004_safety_at_rest
Revises: 0003_two_stage_drafts
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0004_safety_at_rest"
down_revision: str | None = "0003_two_stage_drafts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
