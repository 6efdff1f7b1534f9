"""subscriptions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 18:15:05.172809

Products and prices, subscriptions with their items and billed periods (the primary key
(subscription_id, period_start) makes each period billable once), test clocks; invoices
learn their subscription and when they were found overdue.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("description", sa.String(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
    )
    op.create_table(
        "test_clocks",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("frozen_time", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_clocks")),
    )
    op.create_table(
        "prices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_options", JSON_TYPE, nullable=True),
        sa.Column("recurring_interval", sa.String(length=8), nullable=True),
        sa.Column("recurring_interval_count", sa.Integer(), nullable=True),
        sa.Column("nickname", sa.String(length=500), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "recurring_interval IS NULL OR recurring_interval IN ('day', 'week', 'month', 'year')",
            name=op.f("ck_prices_interval_valid"),
        ),
        sa.CheckConstraint(
            "(recurring_interval IS NULL) = (recurring_interval_count IS NULL)",
            name=op.f("ck_prices_interval_count"),
        ),
        sa.CheckConstraint("unit_amount >= 0", name=op.f("ck_prices_unit_amount_nonneg")),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name=op.f("fk_prices_product_id_products")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
    )
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_prices_product_id"), ["product_id"], unique=False)

    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("pending_currency", sa.String(length=3), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("interval", sa.String(length=8), nullable=False),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("billing_cycle_anchor", sa.BigInteger(), nullable=False),
        sa.Column("current_period_start", sa.BigInteger(), nullable=False),
        sa.Column("current_period_end", sa.BigInteger(), nullable=False),
        sa.Column("collection_method", sa.String(length=24), nullable=False),
        sa.Column("days_until_due", sa.Integer(), nullable=True),
        sa.Column("auto_advance", sa.Boolean(), nullable=False),
        sa.Column("coupon_id", sa.String(length=64), nullable=True),
        sa.Column("discount_start", sa.BigInteger(), nullable=True),
        sa.Column("discount_end", sa.BigInteger(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", sa.BigInteger(), nullable=True),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("renewal_requested_at", sa.BigInteger(), nullable=True),
        sa.Column("metadata", JSON_TYPE, nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "collection_method IN ('charge_automatically', 'send_invoice')",
            name=op.f("ck_subscriptions_collection_method_valid"),
        ),
        sa.CheckConstraint(
            "interval IN ('day', 'week', 'month', 'year')", name=op.f("ck_subscriptions_interval_valid")
        ),
        sa.CheckConstraint("status IN ('active', 'canceled')", name=op.f("ck_subscriptions_status_valid")),
        sa.CheckConstraint(
            "current_period_end > current_period_start", name=op.f("ck_subscriptions_period_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_subscriptions_coupon_id_coupons")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_subscriptions_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriptions_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(
            "ix_subscriptions_due",
            ["current_period_end", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "subscription_items",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("price_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("quantity >= 1", name=op.f("ck_subscription_items_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["price_id"], ["prices.id"], name=op.f("fk_subscription_items_price_id_prices")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_items_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_items")),
        sa.UniqueConstraint("subscription_id", "price_id", name="uq_subscription_item_price"),
    )
    with op.batch_alter_table("subscription_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscription_items_subscription_id"), ["subscription_id"], unique=False
        )

    op.create_table(
        "subscription_periods",
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("billing_reason", sa.String(length=32), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.id"], name=op.f("fk_subscription_periods_invoice_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_periods_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("subscription_id", "period_start", name=op.f("pk_subscription_periods")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("test_clock_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_customers_test_clock_id"), ["test_clock_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_customers_test_clock_id_test_clocks"), "test_clocks", ["test_clock_id"], ["id"]
        )

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscription_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("overdue_at", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_invoices_subscription_id"), ["subscription_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_invoices_subscription_id_subscriptions"),
            "subscriptions",
            ["subscription_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_invoices_subscription_id_subscriptions"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_invoices_subscription_id"))
        batch_op.drop_column("overdue_at")
        batch_op.drop_column("subscription_id")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_customers_test_clock_id_test_clocks"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_customers_test_clock_id"))
        batch_op.drop_column("test_clock_id")

    op.drop_table("subscription_periods")
    with op.batch_alter_table("subscription_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscription_items_subscription_id"))

    op.drop_table("subscription_items")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_subscriptions_due",
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index(batch_op.f("ix_subscriptions_customer_id"))

    op.drop_table("subscriptions")
    with op.batch_alter_table("prices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prices_product_id"))

    op.drop_table("prices")
    op.drop_table("test_clocks")
    op.drop_table("products")
