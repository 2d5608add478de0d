"""Adapter registry: versions, files, status, gate reports, shadow predictions

Revision ID: 0006_adapter_registry
Revises: 0005_knowledge
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006_adapter_registry"
down_revision: str | None = "0005_knowledge"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "adapter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("base_model", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("model_version", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("storage", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("trained_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("training", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("gate", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("replaced_id", sa.Integer(), nullable=True),
        sa.Column("promoted_via", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("live_since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("status_changed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("status_changed_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["adapter.id"]),
        sa.ForeignKeyConstraint(["replaced_id"], ["adapter.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )
    with op.batch_alter_table("adapter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapter_sha256"), ["sha256"], unique=False)
        batch_op.create_index("ix_adapter_status", ["status"], unique=False)
    # at most one live and one shadow adapter (partial unique indexes)
    for status in ("live", "shadow"):
        op.create_index(
            f"uq_adapter_one_{status}",
            "adapter",
            ["status"],
            unique=True,
            sqlite_where=sa.text(f"status = '{status}'"),
            postgresql_where=sa.text(f"status = '{status}'"),
        )
    op.create_table(
        "adapter_blob",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "learning_lease",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
        sa.Column("holder", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("lease_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "shadow_prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("triage_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.Integer(), nullable=False),
        sa.Column("predictions", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["adapter_id"], ["adapter.id"]),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["triage_id"], ["triage.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("triage_id", "adapter_id", name="uq_shadow_prediction_triage_adapter"),
    )
    with op.batch_alter_table("shadow_prediction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shadow_prediction_adapter_id"), ["adapter_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_shadow_prediction_ticket_id"), ["ticket_id"], unique=False)
    # the rolling-window precision of an adapter reads its reviewed triages
    with op.batch_alter_table("triage", schema=None) as batch_op:
        batch_op.create_index("ix_triage_adapter_version", ["adapter_version"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("triage", schema=None) as batch_op:
        batch_op.drop_index("ix_triage_adapter_version")
    with op.batch_alter_table("shadow_prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shadow_prediction_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_shadow_prediction_adapter_id"))
    op.drop_table("shadow_prediction")
    op.drop_table("learning_lease")
    op.drop_table("adapter_blob")
    op.drop_index("uq_adapter_one_shadow", table_name="adapter")
    op.drop_index("uq_adapter_one_live", table_name="adapter")
    with op.batch_alter_table("adapter", schema=None) as batch_op:
        batch_op.drop_index("ix_adapter_status")
        batch_op.drop_index(batch_op.f("ix_adapter_sha256"))
    op.drop_table("adapter")
