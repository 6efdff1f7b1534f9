"""The event types the worker writes (README: Events), for producers that filter them
(``billing list events --type``, a webhook endpoint's ``enabled_events``).

Stripe's names for what exists here, plus two of ours: ``request.failed`` (requests are
asynchronous, so a refused one is reported as an event) and ``invoiceitem.batch_created``
(one event names the items of a list request, up to 1,000: README, Events). A pattern is a type, ``*`` (every
type) or ``<prefix>.*`` (every type under that prefix, e.g. ``invoice.*``).
"""

from __future__ import annotations

from domain.errors import BadRequest

EVENT_TYPES = frozenset(
    {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "customer.balance_transaction.created",
        "customer.discount.created",
        "customer.discount.deleted",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoiceitem.created",
        "invoiceitem.batch_created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.deleted",
        "invoice.overdue",
        "invoice.upcoming",
        "credit_note.created",
        "credit_note.voided",
        "coupon.created",
        "tax_rate.created",
        "product.created",
        "price.created",
        "test_helpers.test_clock.ready",
        "request.failed",
    }
)


def matching(pattern: str, *, field: str = "type") -> frozenset[str]:
    """The event types ``pattern`` names; a pattern that names none is refused (``field``)."""
    if pattern == "*":
        return EVENT_TYPES
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        found = frozenset(t for t in EVENT_TYPES if t.startswith(prefix))
    else:
        found = frozenset({pattern}) & EVENT_TYPES
    if not found:
        raise BadRequest(
            f"unknown event type {pattern!r} (a type such as invoice.paid, a group such as invoice.*, or *)",
            field=field,
        )
    return found
