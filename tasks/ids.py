"""Object ids: a Stripe-style prefix and 26 Crockford base32 characters.

``new_id`` is ULID-shaped: 48 bits of milliseconds, then 80 random bits, so ids sort by
creation time and index inserts stay append-mostly; within a process they never go back.
``derived_id`` is the same shape made from an idempotency key, so a caller who retries
a call with the same key gets the same id and the worker's idempotency check can
recognise the replay.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

PREFIXES = {
    "customer": "cus",
    "invoice_item": "ii",
    "invoice": "in",
    "credit_note": "cn",
    "customer_balance_transaction": "cbtxn",
    "coupon": "co",
    "discount": "di",
    "tax_rate": "txr",
    "tax_id": "txi",
    "product": "prod",
    "price": "price",
    "subscription": "sub",
    "subscription_item": "si",
    "test_clock": "clock",
    "event": "evt",
}


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits at a time: half the steps


def _encode(value: int, length: int) -> str:
    out = []
    if length % 2:
        out.append(_ALPHABET[(value >> (5 * (length - 1))) & 31])
    for shift in range(10 * (length // 2) - 10, -1, -10):
        out.append(_PAIRS[(value >> shift) & 1023])
    return "".join(out)


_last = 0
_lock = threading.Lock()


def new_id(prefix: str) -> str:
    """Strictly increasing within this process, even within one millisecond (ULID's
    monotonic mode), so items sent in one call keep their order as "oldest first"."""
    global _last
    candidate = ((time.time_ns() // 1_000_000) << 80) | int.from_bytes(os.urandom(10), "big")
    with _lock:
        _last = candidate if candidate > _last else _last + 1
        value = _last
    return f"{prefix}_{_encode(value, 26)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` new ids at once, for a list call: consecutive values, as ``new_id`` gives
    them within one millisecond, so they keep the list's order. Only the last 4 characters
    (20 bits) are encoded per id; the rest once per 2**20 ids."""
    global _last
    candidate = ((time.time_ns() // 1_000_000) << 80) | int.from_bytes(os.urandom(10), "big")
    with _lock:
        first = candidate if candidate > _last else _last + 1
        _last = first + count - 1
    out = []
    head, head_of = "", -1
    for value in range(first, first + count):
        if value >> 20 != head_of:
            head, head_of = f"{prefix}_{_encode(value, 26)[:22]}", value >> 20
        out.append(head + _PAIRS[(value >> 10) & 1023] + _PAIRS[value & 1023])
    return out


def derived_id(prefix: str, key: str) -> str:
    digest = hashlib.sha256(f"{prefix}\x00{key}".encode()).digest()
    return f"{prefix}_{_encode(int.from_bytes(digest[:17], 'big') >> 6, 26)}"


def object_type(object_id: str) -> str | None:
    prefix = object_id.partition("_")[0]
    for name, known in PREFIXES.items():
        if known == prefix:
            return name
    return None
