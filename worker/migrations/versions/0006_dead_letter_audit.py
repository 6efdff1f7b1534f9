"""dead letters an operator can work

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 10:00:00

``task_failures`` gains a status (open, retried, resolved; existing rows are open), the time
and note of its resolution; ``task_failure_events`` keeps every retry, resolution and
reopening with who did it and when (README: Failures).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_failures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), server_default="open", nullable=False))
        batch_op.add_column(sa.Column("resolved_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("note", sa.String(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_task_failures_status_valid"), "status IN ('open', 'retried', 'resolved')"
        )
    op.create_table(
        "task_failure_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_failure_events")),
    )
    with op.batch_alter_table("task_failure_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_failure_events_task_id"), ["task_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_failure_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_failure_events_task_id"))
    op.drop_table("task_failure_events")
    with op.batch_alter_table("task_failures", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_task_failures_status_valid"), type_="check")
        batch_op.drop_column("note")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("status")
