"""indexes the metrics exporter reads

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:30:00

``billing exporter`` (README: Operations) reads, on every scrape, the dead letters by status and
the invoices finalized in the last few minutes; these indexes keep both reads on an index
(``task_failures`` may grow large after an incident, ``invoices`` always does).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_invoices_finalized_at",
        "invoices",
        ["finalized_at"],
        postgresql_where=sa.text("finalized_at IS NOT NULL"),
        sqlite_where=sa.text("finalized_at IS NOT NULL"),
    )
    op.create_index("ix_task_failures_status_code", "task_failures", ["status", "error_code"])


def downgrade() -> None:
    op.drop_index("ix_task_failures_status_code", table_name="task_failures")
    op.drop_index("ix_invoices_finalized_at", table_name="invoices")
