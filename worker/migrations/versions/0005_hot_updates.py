"""room for HOT updates

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 22:00:00

PostgreSQL: ``customers`` (its invoice sequence moves at every finalization) and
``customer_balances`` keep 30 % of each page free, so those updates can stay on their page
(heap-only tuples) instead of adding an entry to every index of the table. Applies to pages
written from now on; ``VACUUM FULL customers`` (which locks the table) rewrites the old ones.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("customers", "customer_balances")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
