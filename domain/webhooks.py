"""Webhook rules (README: Webhooks): when a failed delivery is tried again, and which network
addresses an endpoint may never point at. (Which events an endpoint receives:
``tasks.event_types``.)

Pure rules: the caller resolves host names and reads the clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence


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
