"""search indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 19:45:00

A customer's credit notes by customer (``billing list credit_notes --customer``), and
metadata search by JSONB containment on PostgreSQL (GIN, ``jsonb_path_ops``).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_credit_notes_customer_id"), "credit_notes", ["customer_id"], unique=False)
    if op.get_context().dialect.name == "postgresql":
        op.create_index(
            "ix_customers_metadata",
            "customers",
            ["metadata"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_customers_metadata", table_name="customers")
    op.drop_index(op.f("ix_credit_notes_customer_id"), table_name="credit_notes")
