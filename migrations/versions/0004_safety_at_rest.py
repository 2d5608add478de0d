"""Safety at rest: redacted text, encrypted raw payloads, retention and erasure

Adds ticket.reporter_digest (erasure by e-mail without keeping the address) and the erasure log that workers poll
to forget erased tickets. Audit rows from now on carry no ticket or reply text (digests and lengths instead), so
erasure never needs to rewrite the append-only audit log; rows written before this revision held the draft, the
sent reply and the rejection reason in clear: this upgrade replaces those values once by the same digests, with
the append-only triggers lifted for the duration of this transaction only.

Revision ID: 0004_safety_at_rest
Revises: 0003_two_stage_drafts
Create Date: 2026-12-04 18:30:00
"""
from collections.abc import Sequence
import hashlib
import json

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004_safety_at_rest"
down_revision: str | None = "0003_two_stage_drafts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_KEYS = ("draft", "final_reply", "reason")  # what service.review.actions wrote into before/after until 0004
APPEND_ONLY = "audit_entry is append-only"


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reporter_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_ticket_reporter_digest"), ["reporter_digest"], unique=False)
    op.create_table(
        "erasure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("memory_ids", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("erasure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_erasure_at"), ["at"], unique=False)
    _digest_old_audit_text()


def downgrade() -> None:
    with op.batch_alter_table("erasure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_erasure_at"))
    op.drop_table("erasure")
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_reporter_digest"))
        batch_op.drop_column("reporter_digest")


def _digest(value: str) -> dict[str, object]:
    return {"sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(), "chars": len(value)}


def _digest_old_audit_text() -> None:
    """Replace reply / draft / reason text in existing audit rows by digests (see the module docstring)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, before, after FROM audit_entry WHERE action IN ('approved', 'rejected')")
    ).all()
    changed = []
    for row_id, before, after in rows:
        new = []
        for value in (before, after):
            data = json.loads(value) if isinstance(value, str) else value
            if isinstance(data, dict):
                data = {k: (_digest(v) if k in TEXT_KEYS and isinstance(v, str) else v) for k, v in data.items()}
            new.append(data)
        if new != [json.loads(v) if isinstance(v, str) else v for v in (before, after)]:
            changed.append({"id": row_id, "before": json.dumps(new[0]), "after": json.dumps(new[1])})
    if not changed:
        return
    postgres = bind.dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only")
        update = "UPDATE audit_entry SET before = CAST(:before AS json), after = CAST(:after AS json) WHERE id = :id"
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_entry_no_update")
        update = "UPDATE audit_entry SET before = :before, after = :after WHERE id = :id"
    bind.execute(sa.text(update), changed)
    if postgres:
        op.execute("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only")
    else:
        op.execute(
            "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
        )
