"""rendered documents

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-02 09:30:00

``documents`` holds the PDF of each finalized invoice and each credit note, made once by the
document task (``billing.documents.render``, queue ``billing.documents``): the object's id,
its kind, the locale it was rendered in, the SHA-256 of its bytes, the bytes and when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0006"
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


def downgrade() -> None:
    op.drop_table("documents")
