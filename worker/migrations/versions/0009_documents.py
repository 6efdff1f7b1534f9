"""rendered documents

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 09:30:00

``documents`` holds the PDF of each finalized invoice and each credit note, made once by the
document task (``billing.documents.render``, queue ``billing.documents``): the object's id,
its kind, the locale it was rendered in, the SHA-256 of its bytes, the bytes and when.
``email_deliveries`` records each document emailed to a recipient, before and after sending.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("kind IN ('invoice', 'credit_note')", name=op.f("ck_documents_kind_valid")),
        sa.PrimaryKeyConstraint("object_id", name=op.f("pk_documents")),
    )

    op.create_table(
        "email_deliveries",
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=512), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_email_deliveries")),
    )
    op.create_index(op.f("ix_email_deliveries_object_id"), "email_deliveries", ["object_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_email_deliveries_object_id"), table_name="email_deliveries")
    op.drop_table("email_deliveries")
    op.drop_table("documents")
