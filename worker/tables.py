"""SQLModel tables. Constraints carry the guarantees; services rely on them.

Times are Unix seconds (as in Stripe's objects). Amounts are integer minor units.
Percentages are decimal strings ("8.25"), never floats.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import relationship
from sqlmodel import Field, SQLModel

from domain.credit_notes import CreditNoteStatus
from domain.invoices import InvoiceStatus
from domain.subscriptions import SubscriptionStatus

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def json_column(name: str, *, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(name, JSONType, nullable=nullable))


def time_field(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None if nullable else 0, sa_type=BigInteger, nullable=nullable, index=index)


def ref(target: str, *, nullable: bool = True, index: bool = False, ondelete: str | None = None) -> Any:
    return Field(
        default=None,
        sa_column_args=[ForeignKey(target, ondelete=ondelete)],
        sa_type=String(64),
        nullable=nullable,
        index=index,
    )


def one_of(column: str, values: Iterable[str]) -> str:
    """A check constraint's text: ``column`` holds one of ``values`` (in their order)."""
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


HOT_FILLFACTOR = 70
"""PostgreSQL: pages of tables whose rows are updated in place on the hot path keep this
percentage filled, so the updates can stay on the page (heap-only tuples)."""


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint("tax_exempt IN ('none', 'exempt', 'reverse')", name="tax_exempt_valid"),
        CheckConstraint("next_invoice_sequence >= 1", name="sequence_positive"),
        # metadata search (find_customers) by JSONB containment; SQLite scans
        Index(
            "ix_customers_metadata",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ).ddl_if(dialect="postgresql"),
        # every finalization moves next_invoice_sequence: room on the page keeps that update
        # HOT (no new entry in each of the table's five indexes; migration 0005)
        {"postgresql_with": {"fillfactor": HOT_FILLFACTOR}},
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    email: str | None = Field(default=None, index=True, sa_type=String(512))
    name: str | None = Field(default=None, sa_type=String(256))
    phone: str | None = Field(default=None, sa_type=String(32))
    description: str | None = None
    metadata_: dict[str, str] | None = json_column("metadata")
    address: dict[str, Any] | None = json_column("address")
    shipping: dict[str, Any] | None = json_column("shipping")
    preferred_locales: list[str] | None = json_column("preferred_locales")
    tax_exempt: str = Field(default="none", sa_type=String(8))
    currency: str | None = Field(default=None, sa_type=String(3))
    invoice_prefix: str = Field(unique=True, sa_type=String(12))
    next_invoice_sequence: int = 1
    default_payment_method: str | None = Field(default=None, sa_type=String(64))
    test_clock_id: str | None = ref("test_clocks.id", index=True)
    """Customers on a test clock live at the clock's time and are billed when it advances."""
    deleted: bool = False
    created: int = time_field()


class CustomerTaxId(SQLModel, table=True):
    __tablename__ = "customer_tax_ids"
    __table_args__ = (UniqueConstraint("customer_id", "type", "value", name="uq_customer_tax_id"),)

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False, index=True, ondelete="CASCADE")
    type: str = Field(sa_type=String(16))
    value: str = Field(sa_type=String(64))
    created: int = time_field()


class CustomerBalance(SQLModel, table=True):
    """Current balance per (customer, currency); the row is locked while it changes."""

    __tablename__ = "customer_balances"
    __table_args__ = ({"postgresql_with": {"fillfactor": HOT_FILLFACTOR}},)

    customer_id: str = Field(
        primary_key=True, sa_column_args=[ForeignKey("customers.id")], sa_type=String(64)
    )
    currency: str = Field(primary_key=True, sa_type=String(3))
    balance: int = Field(default=0, sa_type=BigInteger)
    transaction_count: int = 0


class BalanceTransaction(SQLModel, table=True):
    """Append-only ledger. ``sequence`` numbers each (customer, currency) stream from 1."""

    __tablename__ = "balance_transactions"
    __table_args__ = (
        UniqueConstraint("customer_id", "currency", "sequence", name="uq_balance_transaction_sequence"),
        CheckConstraint(
            "type IN ('adjustment', 'applied_to_invoice', 'unapplied_from_invoice', 'credit_note', 'initial',"
            " 'invoice_too_small', 'invoice_too_large', 'invoice_overpaid')",
            name="type_valid",
        ),
        CheckConstraint("amount <> 0", name="amount_nonzero"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False)
    currency: str = Field(sa_type=String(3))
    sequence: int
    amount: int = Field(sa_type=BigInteger)
    ending_balance: int = Field(sa_type=BigInteger)
    type: str = Field(sa_type=String(24))
    invoice_id: str | None = ref("invoices.id", index=True)
    credit_note_id: str | None = ref("credit_notes.id")
    description: str | None = None
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class TaxRateRow(SQLModel, table=True):
    __tablename__ = "tax_rates"

    id: str = Field(primary_key=True, sa_type=String(64))
    display_name: str = Field(sa_type=String(50))
    percentage: str = Field(sa_type=String(12))
    inclusive: bool = False
    country: str | None = Field(default=None, sa_type=String(2))
    jurisdiction: str | None = Field(default=None, sa_type=String(64))
    description: str | None = None
    active: bool = True
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class CouponRow(SQLModel, table=True):
    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("(percent_off IS NULL) <> (amount_off IS NULL)", name="one_kind_of_discount"),
        CheckConstraint(
            "amount_off IS NULL OR (currency IS NOT NULL AND amount_off > 0)", name="amount_off_currency"
        ),
        CheckConstraint("duration IN ('once', 'repeating', 'forever')", name="duration_valid"),
        CheckConstraint("duration <> 'repeating' OR duration_in_months > 0", name="repeating_months"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    name: str | None = Field(default=None, sa_type=String(40))
    percent_off: str | None = Field(default=None, sa_type=String(12))
    amount_off: int | None = Field(default=None, sa_type=BigInteger)
    currency: str | None = Field(default=None, sa_type=String(3))
    currency_options: dict[str, int] | None = json_column("currency_options")
    duration: str = Field(sa_type=String(10))
    duration_in_months: int | None = None
    max_redemptions: int | None = None
    times_redeemed: int = 0
    redeem_by: int | None = time_field(nullable=True)
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class DiscountRow(SQLModel, table=True):
    """A customer's discount: at most one per customer."""

    __tablename__ = "discounts"

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False)
    coupon_id: str = ref("coupons.id", nullable=False)
    start: int = time_field()
    end: int | None = time_field(nullable=True)
    created: int = time_field()

    __table_args__ = (UniqueConstraint("customer_id", name="uq_discount_customer"),)


class Invoice(SQLModel, table=True):
    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("customer_id", "number", name="uq_invoice_number"),
        CheckConstraint(one_of("status", InvoiceStatus), name="status_valid"),
        CheckConstraint(
            "collection_method IN ('charge_automatically', 'send_invoice')", name="collection_method_valid"
        ),
        CheckConstraint(
            "amount_due >= 0 AND amount_remaining >= 0 AND amount_paid >= 0", name="amounts_nonneg"
        ),
        CheckConstraint(f"status = '{InvoiceStatus.DRAFT}' OR number IS NOT NULL", name="finalized_numbered"),
        # billing exporter: invoices finalized lately (README: Operations)
        Index(
            "ix_invoices_finalized_at",
            "finalized_at",
            postgresql_where=text("finalized_at IS NOT NULL"),
            sqlite_where=text("finalized_at IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False, index=True)
    currency: str = Field(sa_type=String(3))
    status: str = Field(default=InvoiceStatus.DRAFT, sa_type=String(16), index=True)
    number: str | None = Field(default=None, sa_type=String(32))
    billing_reason: str = Field(default="manual", sa_type=String(32))
    collection_method: str = Field(default="charge_automatically", sa_type=String(24))
    days_until_due: int | None = None
    due_date: int | None = time_field(nullable=True)
    auto_advance: bool = False
    description: str | None = None
    footer: str | None = None
    metadata_: dict[str, str] | None = json_column("metadata")
    default_tax_rates: list[str] | None = json_column("default_tax_rates")
    discounts: list[str] | None = json_column("discounts")
    chain_part: int = 1
    subscription_id: str | None = ref("subscriptions.id", index=True)
    overdue_at: int | None = time_field(nullable=True)
    """When the overdue job found this send_invoice invoice open past its due date."""

    subtotal: int = Field(default=0, sa_type=BigInteger)
    total_discount_amounts: list[dict[str, Any]] | None = json_column("total_discount_amounts")
    total_taxes: list[dict[str, Any]] | None = json_column("total_taxes")
    total_excluding_tax: int = Field(default=0, sa_type=BigInteger)
    total: int = Field(default=0, sa_type=BigInteger)
    starting_balance: int = Field(default=0, sa_type=BigInteger)
    ending_balance: int | None = Field(default=None, sa_type=BigInteger)
    amount_due: int = Field(default=0, sa_type=BigInteger)
    amount_paid: int = Field(default=0, sa_type=BigInteger)
    amount_remaining: int = Field(default=0, sa_type=BigInteger)
    pre_payment_credit_notes_amount: int = Field(default=0, sa_type=BigInteger)
    post_payment_credit_notes_amount: int = Field(default=0, sa_type=BigInteger)
    paid_out_of_band: bool = False

    customer_email: str | None = None
    customer_name: str | None = None
    customer_phone: str | None = None
    customer_address: dict[str, Any] | None = json_column("customer_address")
    customer_shipping: dict[str, Any] | None = json_column("customer_shipping")
    customer_tax_exempt: str | None = Field(default=None, sa_type=String(8))
    customer_tax_ids: list[dict[str, str]] | None = json_column("customer_tax_ids")

    created: int = time_field()
    finalized_at: int | None = time_field(nullable=True)
    paid_at: int | None = time_field(nullable=True)
    voided_at: int | None = time_field(nullable=True)
    marked_uncollectible_at: int | None = time_field(nullable=True)


class InvoiceItem(SQLModel, table=True):
    __tablename__ = "invoice_items"
    __table_args__ = (
        Index(
            "ix_invoice_items_pending",
            "customer_id",
            "currency",
            "created",
            "id",
            postgresql_where=text("invoice_id IS NULL"),
            sqlite_where=text("invoice_id IS NULL"),
        ),
        CheckConstraint("amount BETWEEN -99999999 AND 99999999", name="amount_bounds"),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False)
    currency: str = Field(sa_type=String(3))
    amount: int = Field(sa_type=BigInteger)
    unit_amount: int | None = Field(default=None, sa_type=BigInteger)
    quantity: int = 1
    description: str | None = None
    discountable: bool = True
    period_start: int | None = time_field(nullable=True)
    period_end: int | None = time_field(nullable=True)
    metadata_: dict[str, str] | None = json_column("metadata")
    tax_rates: list[str] | None = json_column("tax_rates")
    invoice_id: str | None = ref("invoices.id", index=True)
    subscription_id: str | None = Field(default=None, sa_type=String(64))
    discount_amounts: list[dict[str, Any]] | None = json_column("discount_amounts")
    tax_amounts: list[dict[str, Any]] | None = json_column("tax_amounts")
    created: int = time_field()


class CreditNote(SQLModel, table=True):
    __tablename__ = "credit_notes"
    __table_args__ = (
        CheckConstraint(one_of("status", CreditNoteStatus), name="status_valid"),
        CheckConstraint("type IN ('pre_payment', 'post_payment')", name="type_valid"),
        CheckConstraint("amount > 0", name="amount_positive"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    invoice_id: str = ref("invoices.id", nullable=False, index=True)
    customer_id: str = ref("customers.id", nullable=False, index=True)
    currency: str = Field(sa_type=String(3))
    number: str = Field(unique=True, sa_type=String(40))
    status: str = Field(default=CreditNoteStatus.ISSUED, sa_type=String(8))
    type: str = Field(sa_type=String(16))
    amount: int = Field(sa_type=BigInteger)
    amount_due_reduction: int = Field(default=0, sa_type=BigInteger)
    refund_amount: int = Field(default=0, sa_type=BigInteger)
    credit_amount: int = Field(default=0, sa_type=BigInteger)
    out_of_band_amount: int = Field(default=0, sa_type=BigInteger)
    reason: str | None = Field(default=None, sa_type=String(32))
    memo: str | None = None
    lines: list[dict[str, Any]] | None = json_column("lines")
    customer_balance_transaction: str | None = Field(default=None, sa_type=String(64))
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()
    voided_at: int | None = time_field(nullable=True)


class IdempotencyKey(SQLModel, table=True):
    """One row per completed request; written in the same transaction as its effect."""

    __tablename__ = "idempotency_keys"

    key: str = Field(primary_key=True, sa_type=String(300))
    operation: str = Field(sa_type=String(64))
    request_hash: str = Field(sa_type=String(64))
    resource_id: str | None = Field(default=None, sa_type=String(64))
    created: int = time_field(index=True)


class FailureStatus(enum.StrEnum):
    """Where an operator is with a dead letter (README: Failures). A failure recorded again
    after a retry or a resolution is open again."""

    OPEN = "open"
    RETRIED = "retried"  # sent again; open again if it fails again
    RESOLVED = "resolved"  # an operator closed it, with a note


class TaskFailure(SQLModel, table=True):
    """Dead letters: a task that could not succeed, with its payload and error."""

    __tablename__ = "task_failures"
    __table_args__ = (
        CheckConstraint(one_of("status", FailureStatus), name="status_valid"),
        Index("ix_task_failures_status_code", "status", "error_code"),  # billing exporter
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(unique=True, sa_type=String(64))
    task_name: str = Field(sa_type=String(128), index=True)
    payload: dict[str, Any] | None = json_column("payload")
    error_type: str = Field(sa_type=String(64))
    error_code: str | None = Field(default=None, sa_type=String(64))
    error_field: str | None = Field(default=None, sa_type=String(128))
    error_message: str
    retryable: bool = False
    attempts: int = 1
    first_seen: int = time_field()
    last_seen: int = time_field()
    status: str = Field(
        default=FailureStatus.OPEN,
        sa_type=String(16),
        sa_column_kwargs={"server_default": FailureStatus.OPEN},
    )
    resolved_at: int | None = time_field(nullable=True)
    note: str | None = None


class TaskFailureEvent(SQLModel, table=True):
    """The audit trail of a dead letter: each retry, resolution and reopening, by whom and when."""

    __tablename__ = "task_failure_events"

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(sa_type=String(64), index=True)
    action: str = Field(sa_type=String(16))  # retried | resolved | reopened
    actor: str = Field(sa_type=String(128))
    at: int = time_field()
    note: str | None = None


class OutboxMessage(SQLModel, table=True):
    """Transactional outbox: a follow-up task written with the effect that asked for it.

    Published after the commit; closed (``done_at``) in the same transaction as the
    follow-up's own effect, or when it fails for good. The reconciler re-publishes rows
    that stay open too long, so a lost message only delays the work.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_open",
            "created",
            postgresql_where=text("done_at IS NULL"),
            sqlite_where=text("done_at IS NULL"),
        ),
    )

    key: str = Field(primary_key=True, sa_type=String(300))
    """The follow-up's idempotency key."""
    task_id: str = Field(unique=True, sa_type=String(64))
    task_name: str = Field(sa_type=String(128))
    payload: dict[str, Any] = Field(sa_column=Column("payload", JSONType, nullable=False))
    created: int = time_field()
    published_at: int | None = time_field(nullable=True)
    publish_count: int = 0
    done_at: int | None = time_field(nullable=True)
    failed: bool = False


class MessageDelivery(SQLModel, table=True):
    """Redeliveries of one message (counted only once it comes back): the park cap."""

    __tablename__ = "message_deliveries"

    task_id: str = Field(primary_key=True, sa_type=String(64))
    task_name: str = Field(sa_type=String(128))
    redeliveries: int = 0
    first_seen: int = time_field()
    last_seen: int = time_field(index=True)


class SandboxClock(SQLModel, table=True):
    """A test clock (Stripe's name; not ``TestClock`` so pytest does not collect it): its
    customers live at ``frozen_time``."""

    __tablename__ = "test_clocks"

    id: str = Field(primary_key=True, sa_type=String(64))
    name: str | None = Field(default=None, sa_type=String(300))
    frozen_time: int = time_field()
    created: int = time_field()


class Product(SQLModel, table=True):
    __tablename__ = "products"

    id: str = Field(primary_key=True, sa_type=String(64))
    name: str = Field(sa_type=String(250))
    description: str | None = None
    active: bool = True
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class Price(SQLModel, table=True):
    """A unit amount in ``currency`` and optionally in others (``currency_options``); immutable."""

    __tablename__ = "prices"
    __table_args__ = (
        CheckConstraint("unit_amount >= 0", name="unit_amount_nonneg"),
        CheckConstraint(
            "recurring_interval IS NULL OR recurring_interval IN ('day', 'week', 'month', 'year')",
            name="interval_valid",
        ),
        CheckConstraint(
            "(recurring_interval IS NULL) = (recurring_interval_count IS NULL)", name="interval_count"
        ),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    product_id: str = ref("products.id", nullable=False, index=True)
    currency: str = Field(sa_type=String(3))
    unit_amount: int = Field(sa_type=BigInteger)
    currency_options: dict[str, int] | None = json_column("currency_options")
    """Currency -> unit amount."""
    recurring_interval: str | None = Field(default=None, sa_type=String(8))
    recurring_interval_count: int | None = None
    nickname: str | None = Field(default=None, sa_type=String(500))
    active: bool = True
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class Subscription(SQLModel, table=True):
    """One currency, one interval, periods computed from ``billing_cycle_anchor``."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint(one_of("status", SubscriptionStatus), name="status_valid"),
        CheckConstraint(
            "collection_method IN ('charge_automatically', 'send_invoice')", name="collection_method_valid"
        ),
        CheckConstraint("interval IN ('day', 'week', 'month', 'year')", name="interval_valid"),
        CheckConstraint("current_period_end > current_period_start", name="period_ordered"),
        Index(
            "ix_subscriptions_due",
            "current_period_end",
            "id",
            postgresql_where=text(f"status = '{SubscriptionStatus.ACTIVE}'"),
            sqlite_where=text(f"status = '{SubscriptionStatus.ACTIVE}'"),
        ),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    customer_id: str = ref("customers.id", nullable=False, index=True)
    currency: str = Field(sa_type=String(3))
    pending_currency: str | None = Field(default=None, sa_type=String(3))
    """Set by a currency change; becomes ``currency`` at the next period boundary."""
    status: str = Field(default=SubscriptionStatus.ACTIVE, sa_type=String(16))
    interval: str = Field(sa_type=String(8))
    interval_count: int = 1
    billing_cycle_anchor: int = time_field()
    current_period_start: int = time_field()
    current_period_end: int = time_field()
    collection_method: str = Field(default="charge_automatically", sa_type=String(24))
    days_until_due: int | None = None
    auto_advance: bool = True
    coupon_id: str | None = ref("coupons.id")
    discount_start: int | None = time_field(nullable=True)
    discount_end: int | None = time_field(nullable=True)
    cancel_at_period_end: bool = False
    canceled_at: int | None = time_field(nullable=True)
    ended_at: int | None = time_field(nullable=True)
    renewal_requested_at: int | None = time_field(nullable=True)
    """When beat last asked for this subscription's next renewal (asked again only after a while)."""
    metadata_: dict[str, str] | None = json_column("metadata")
    created: int = time_field()


class SubscriptionItem(SQLModel, table=True):
    __tablename__ = "subscription_items"
    __table_args__ = (
        UniqueConstraint("subscription_id", "price_id", name="uq_subscription_item_price"),
        CheckConstraint("quantity >= 1", name="quantity_positive"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    subscription_id: str = ref("subscriptions.id", nullable=False, index=True)
    price_id: str = ref("prices.id", nullable=False)
    quantity: int = 1
    created: int = time_field()


class SubscriptionPeriod(SQLModel, table=True):
    """One row per billed (subscription, period): the primary key makes a second bill impossible."""

    __tablename__ = "subscription_periods"

    subscription_id: str = Field(
        primary_key=True, sa_column_args=[ForeignKey("subscriptions.id")], sa_type=String(64)
    )
    period_start: int = Field(primary_key=True, sa_type=BigInteger)
    period_end: int = Field(sa_type=BigInteger)
    currency: str = Field(sa_type=String(3))
    invoice_id: str | None = ref("invoices.id")
    billing_reason: str = Field(sa_type=String(32))
    created: int = time_field()


class Event(SQLModel, table=True):
    """A Stripe-shaped event, written in the transaction of the change it reports (README:
    Events). ``data`` is ``{"object": <the object as ``billing get`` prints it after the
    change>, "previous_attributes": {...}}`` (the latter for updates only); ``object``,
    ``livemode``, ``api_version`` and ``request`` are the view's (``worker.views``)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_created", "created", "id"),)

    id: str = Field(primary_key=True, sa_type=String(64))
    type: str = Field(sa_type=String(64), index=True)
    created: int = time_field()
    customer_id: str | None = Field(default=None, sa_type=String(64), index=True)
    """The customer the object belongs to (no foreign key: a ``request.failed`` may name one
    that does not exist)."""
    data: dict[str, Any] = Field(sa_column=Column("data", JSONType, nullable=False))
    request_id: str | None = Field(default=None, sa_type=String(300))
    """The request's own key (a chain's part n: ``<key>:part<n>``): what the producer sent."""
    idempotency_key: str | None = Field(default=None, sa_type=String(300), index=True)


class Document(SQLModel, table=True):
    """A rendered document (worker/documents): the PDF of an invoice or a credit note.

    Made once, after the object is finalized (an invoice) or created (a credit note), and
    never replaced: one row per object. ``content_hash`` is the SHA-256 of ``content``.
    """

    __tablename__ = "documents"
    __table_args__ = (CheckConstraint("kind IN ('invoice', 'credit_note')", name="kind_valid"),)

    object_id: str = Field(primary_key=True, sa_type=String(64))
    kind: str = Field(sa_type=String(16))
    locale: str = Field(sa_type=String(35))
    content_type: str = Field(default="application/pdf", sa_type=String(64))
    content_hash: str = Field(sa_type=String(64))
    size: int = Field(sa_type=BigInteger)
    content: bytes = Field(sa_type=LargeBinary)
    created: int = time_field()


class EmailDelivery(SQLModel, table=True):
    """One document emailed to one recipient: recorded before the message is sent (``sent_at``
    null), marked sent after; a retry finds the row and sends the same ``Message-ID`` again."""

    __tablename__ = "email_deliveries"

    message_id: str = Field(primary_key=True, sa_type=String(255))
    object_id: str = Field(sa_type=String(64), index=True)
    recipient: str = Field(sa_type=String(512))
    attempts: int = 0
    created: int = time_field()
    sent_at: int | None = time_field(nullable=True)


# Flush order: the unit of work orders INSERTs between tables by relationship(), not by
# foreign key alone. A ledger row may be added in the same flush as the invoice it points
# at (generation writes a finalized invoice with one INSERT): the invoice goes first.
_ledger = inspect(BalanceTransaction)
_ledger.add_property(
    "invoice", relationship(Invoice, foreign_keys=[_ledger.columns.invoice_id], lazy="raise")
)
