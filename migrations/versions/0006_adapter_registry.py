"""Adapter registry: versions, files, status, gate reports, shadow predictions

Revision ID: 0006_adapter_registry
Revises: 0005_knowledge
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision: str = "0006_adapter_registry"
down_revision: str | None = "0005_knowledge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
