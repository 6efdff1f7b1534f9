"""Webhook rules (README: Webhooks): which events an endpoint receives, when a failed delivery
is tried again, and which network addresses an endpoint may never point at.

Pure rules: the caller resolves host names and reads the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from domain.errors import BadRequest

WILDCARD = "*"

EVENT_TYPES: frozenset[str] = frozenset(
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
        "invoiceitem.deleted",
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
"""Stripe's event types for what exists here (issue 12), plus ``request.failed`` (ours)."""

MAX_ENABLED_EVENTS = len(EVENT_TYPES) + 1


def check_enabled_events(names: Sequence[str], *, field: str = "enabled_events") -> list[str]:
    """``["*"]`` or known event types, each once; an unknown one is named by its position."""
    if not names:
        raise BadRequest("give at least one event type, or '*' for all", field=field)
    seen: list[str] = []
    for index, name in enumerate(names):
        if name != WILDCARD and name not in EVENT_TYPES:
            raise BadRequest(f"unknown event type {name!r}", field=f"{field}[{index}]")
        if name in seen:
            raise BadRequest(f"event type {name!r} is listed twice", field=f"{field}[{index}]")
        seen.append(name)
    if WILDCARD in seen and len(seen) > 1:
        raise BadRequest("'*' already names every event type: give it alone", field=field)
    return seen


def receives(enabled_events: Iterable[str], event_type: str) -> bool:
    enabled = set(enabled_events)
    return WILDCARD in enabled or event_type in enabled


def next_retry_in(schedule: Sequence[int], attempts: int) -> int | None:
    """Seconds until the next try after ``attempts`` failed tries, or None: given up.

    ``schedule[n]`` is the wait after the (n+1)-th failure; its sum is how long a delivery is
    tried (the default spans about 3 days, as Stripe's retries do)."""
    if attempts < 1 or attempts > len(schedule):
        return None
    return int(schedule[attempts - 1])


def refused_address(address: str) -> str | None:
    """Why an endpoint may not be reached at ``address`` (an IP literal), or None.

    Loopback, link-local (cloud metadata services live there), private, shared (carrier NAT),
    multicast, reserved and unspecified addresses are refused; IPv4 mapped into IPv6 is judged
    as the IPv4 address it maps."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private or not ip.is_global),
    )
    for reason, hit in checks:
        if hit:
            return reason
    return None
