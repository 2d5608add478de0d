"""Knowledge base: articles, passages, full-text index; similar tickets

Revision ID: 0005_knowledge
Revises: 0004_safety_at_rest
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0005_knowledge"
down_revision: str | None = "0004_safety_at_rest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
