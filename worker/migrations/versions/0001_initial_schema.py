"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 15:32:28.974402
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=True),
        sa.Column("percent_off", sa.String(length=12), nullable=True),
        sa.Column("amount_off", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("currency_options", JSON_TYPE, nullable=True),
        sa.Column("duration", sa.String(length=10), nullable=False),
        sa.Column("duration_in_months", sa.Integer(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("times_redeemed", sa.Integer(), nullable=False),
        sa.Column("redeem_by", sa.BigInteger(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "duration <> 'repeating' OR duration_in_months > 0", name=op.f("ck_coupons_repeating_months")
        ),
        sa.CheckConstraint(
            "duration IN ('once', 'repeating', 'forever')", name=op.f("ck_coupons_duration_valid")
        ),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL)", name=op.f("ck_coupons_one_kind_of_discount")
        ),
        sa.CheckConstraint(
            "amount_off IS NULL OR (currency IS NOT NULL AND amount_off > 0)",
            name=op.f("ck_coupons_amount_off_currency"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=512), nullable=True),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("address", JSON_TYPE, nullable=True),
        sa.Column("shipping", JSON_TYPE, nullable=True),
        sa.Column("preferred_locales", JSON_TYPE, nullable=True),
        sa.Column("tax_exempt", sa.String(length=8), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("invoice_prefix", sa.String(length=12), nullable=False),
        sa.Column("next_invoice_sequence", sa.Integer(), nullable=False),
        sa.Column("default_payment_method", sa.String(length=64), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "tax_exempt IN ('none', 'exempt', 'reverse')", name=op.f("ck_customers_tax_exempt_valid")
        ),
        sa.CheckConstraint("next_invoice_sequence >= 1", name=op.f("ck_customers_sequence_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("invoice_prefix", name=op.f("uq_customers_invoice_prefix")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customers_email"), ["email"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created"), ["created"], unique=False)

    op.create_table(
        "task_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("task_name", sa.String(length=128), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=True),
        sa.Column("error_type", sa.String(length=64), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_field", sa.String(length=128), nullable=True),
        sa.Column("error_message", sa.String(), nullable=False),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_failures")),
        sa.UniqueConstraint("task_id", name=op.f("uq_task_failures_task_id")),
    )
    with op.batch_alter_table("task_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_failures_task_name"), ["task_name"], unique=False)

    op.create_table(
        "tax_rates",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=50), nullable=False),
        sa.Column("percentage", sa.String(length=12), nullable=False),
        sa.Column("inclusive", sa.Boolean(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("jurisdiction", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_rates")),
    )
    op.create_table(
        "customer_balances",
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("transaction_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_customer_balances_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("customer_id", "currency", name=op.f("pk_customer_balances")),
    )
    op.create_table(
        "customer_tax_ids",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_customer_tax_ids_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_tax_ids")),
        sa.UniqueConstraint("customer_id", "type", "value", name="uq_customer_tax_id"),
    )
    with op.batch_alter_table("customer_tax_ids", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_tax_ids_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "discounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["coupon_id"], ["coupons.id"], name=op.f("fk_discounts_coupon_id_coupons")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_discounts_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discounts")),
        sa.UniqueConstraint("customer_id", name="uq_discount_customer"),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=True),
        sa.Column("billing_reason", sa.String(length=32), nullable=False),
        sa.Column("collection_method", sa.String(length=24), nullable=False),
        sa.Column("days_until_due", sa.Integer(), nullable=True),
        sa.Column("due_date", sa.BigInteger(), nullable=True),
        sa.Column("auto_advance", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("footer", sa.String(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("default_tax_rates", JSON_TYPE, nullable=True),
        sa.Column("discounts", JSON_TYPE, nullable=True),
        sa.Column("chain_part", sa.Integer(), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("total_discount_amounts", JSON_TYPE, nullable=True),
        sa.Column("total_taxes", JSON_TYPE, nullable=True),
        sa.Column("total_excluding_tax", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("starting_balance", sa.BigInteger(), nullable=False),
        sa.Column("ending_balance", sa.BigInteger(), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=False),
        sa.Column("pre_payment_credit_notes_amount", sa.BigInteger(), nullable=False),
        sa.Column("post_payment_credit_notes_amount", sa.BigInteger(), nullable=False),
        sa.Column("paid_out_of_band", sa.Boolean(), nullable=False),
        sa.Column("customer_email", sa.String(), nullable=True),
        sa.Column("customer_name", sa.String(), nullable=True),
        sa.Column("customer_phone", sa.String(), nullable=True),
        sa.Column("customer_address", JSON_TYPE, nullable=True),
        sa.Column("customer_shipping", JSON_TYPE, nullable=True),
        sa.Column("customer_tax_exempt", sa.String(length=8), nullable=True),
        sa.Column("customer_tax_ids", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("finalized_at", sa.BigInteger(), nullable=True),
        sa.Column("paid_at", sa.BigInteger(), nullable=True),
        sa.Column("voided_at", sa.BigInteger(), nullable=True),
        sa.Column("marked_uncollectible_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "collection_method IN ('charge_automatically', 'send_invoice')",
            name=op.f("ck_invoices_collection_method_valid"),
        ),
        sa.CheckConstraint(
            "status = 'draft' OR number IS NOT NULL", name=op.f("ck_invoices_finalized_numbered")
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'open', 'paid', 'void', 'uncollectible')",
            name=op.f("ck_invoices_status_valid"),
        ),
        sa.CheckConstraint(
            "amount_due >= 0 AND amount_remaining >= 0 AND amount_paid >= 0",
            name=op.f("ck_invoices_amounts_nonneg"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoices_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("customer_id", "number", name="uq_invoice_number"),
    )
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoices_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_invoices_status"), ["status"], unique=False)

    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_due_reduction", sa.BigInteger(), nullable=False),
        sa.Column("refund_amount", sa.BigInteger(), nullable=False),
        sa.Column("credit_amount", sa.BigInteger(), nullable=False),
        sa.Column("out_of_band_amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("memo", sa.String(), nullable=True),
        sa.Column("lines", JSON_TYPE, nullable=True),
        sa.Column("customer_balance_transaction", sa.String(length=64), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("voided_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("status IN ('issued', 'void')", name=op.f("ck_credit_notes_status_valid")),
        sa.CheckConstraint(
            "type IN ('pre_payment', 'post_payment')", name=op.f("ck_credit_notes_type_valid")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_notes_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_credit_notes_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("number", name=op.f("uq_credit_notes_number")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_credit_notes_invoice_id"), ["invoice_id"], unique=False)

    op.create_table(
        "invoice_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("discountable", sa.Boolean(), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=True),
        sa.Column("period_end", sa.BigInteger(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("tax_rates", JSON_TYPE, nullable=True),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("discount_amounts", JSON_TYPE, nullable=True),
        sa.Column("tax_amounts", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "amount BETWEEN -99999999 AND 99999999", name=op.f("ck_invoice_items_amount_bounds")
        ),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_invoice_items_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_invoice_items_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_invoice_items_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_items")),
    )
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoice_items_invoice_id"), ["invoice_id"], unique=False)
        batch_op.create_index(
            "ix_invoice_items_pending",
            ["customer_id", "currency", "created", "id"],
            unique=False,
            postgresql_where=sa.text("invoice_id IS NULL"),
            sqlite_where=sa.text("invoice_id IS NULL"),
        )

    op.create_table(
        "balance_transactions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("ending_balance", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("credit_note_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "type IN ('adjustment', 'applied_to_invoice', 'unapplied_from_invoice', 'credit_note', 'initial', 'invoice_too_small', 'invoice_too_large', 'invoice_overpaid')",
            name=op.f("ck_balance_transactions_type_valid"),
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_balance_transactions_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_balance_transactions_credit_note_id_credit_notes"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_balance_transactions_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_balance_transactions_invoice_id_invoices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_balance_transactions")),
        sa.UniqueConstraint("customer_id", "currency", "sequence", name="uq_balance_transaction_sequence"),
    )
    with op.batch_alter_table("balance_transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_balance_transactions_invoice_id"), ["invoice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("balance_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_balance_transactions_invoice_id"))

    op.drop_table("balance_transactions")
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_invoice_items_pending",
            postgresql_where=sa.text("invoice_id IS NULL"),
            sqlite_where=sa.text("invoice_id IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_invoice_items_invoice_id"))

    op.drop_table("invoice_items")
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_credit_notes_invoice_id"))

    op.drop_table("credit_notes")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoices_status"))
        batch_op.drop_index(batch_op.f("ix_invoices_customer_id"))

    op.drop_table("invoices")
    op.drop_table("discounts")
    with op.batch_alter_table("customer_tax_ids", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_tax_ids_customer_id"))

    op.drop_table("customer_tax_ids")
    op.drop_table("customer_balances")
    op.drop_table("tax_rates")
    with op.batch_alter_table("task_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_failures_task_name"))

    op.drop_table("task_failures")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_email"))

    op.drop_table("customers")
    op.drop_table("coupons")
