"""Each request's fate: pending, succeeded (with the ids it created) or failed (the error).

The worker writes one compact record per request **after** its transaction commits (or its
failure is recorded), keyed by the request's idempotency key, on the broker's Redis with an
expiry (``BILLING_FATE_TTL_S``, default 24 h); a producer reads it by key, without the
database. Nothing is written or read at send time, so a request nobody asks about costs one
``SET`` on the worker (one script call per batch of messages taken together). README: Learning
a request's outcome.

A record (JSON, ``_billing.fate.<key>``)::

    {"status": "succeeded", "task": "billing.invoices.create", "ids": ["in_..."],
     "follow_ups": ["<key>:part2"], "replayed": false, "at": 1764662400}
    {"status": "failed", "task": "...", "error": {"type": "invalid_request_error",
     "code": "resource_missing", "field": "customer", "message": "...", "class": "NotFound"},
     "retryable": false, "at": 1764662400}

No record means pending (or expired: a key older than the expiry reads as pending too).
A request that asked for follow-ups (the next invoices of a 250-line chain, one chain per
currency of ``invoice_pending``) names their keys; ``resolve`` follows them, so the fate of
a chain's first request is succeeded only once every part is, with every invoice's id.

Stores: ``RedisFates`` on a Redis broker (producers and workers in any process), and
``MemoryFates`` for the in-process ``memory://`` broker of the embedded default, where
producer and worker share one process anyway.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

FATE_PREFIX = "_billing.fate."
MAX_PARTS = 100_000
"""Requests one fate may gather (a chain of 25 million items): a bound, not a limit met in use."""

Status = Literal["pending", "succeeded", "failed"]

# KEYS[1] the fate, ARGV[1] the failed record, ARGV[2] its expiry (s). A failure never replaces a
# success: the same key sent again with other parameters fails, but the first request's effect stands.
_PUT_FAILED = """
local current = redis.call('GET', KEYS[1])
if current and string.find(current, '"status":"succeeded"', 1, true) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


# KEYS the fates, ARGV[1] their expiry (s), ARGV[i + 1] the record of KEYS[i]. One command for a
# batch's records: half the client's CPU of a pipeline of SETs (measured: 100 records, 0.8 ms vs 1.8 ms).
_PUT_SUCCEEDED = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


class FateStore(Protocol):
    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The records of these request keys (None: none), in one round trip."""

    def put_succeeded(self, records: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        """Write these records in one round trip; each replaces what was there."""

    def put_failed(self, key: str, record: dict[str, Any], ttl_s: int) -> None:
        """Write a failed record unless the key already succeeded."""


class RedisFates:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._put_failed = client.register_script(_PUT_FAILED)
        self._put_succeeded = client.register_script(_PUT_SUCCEEDED)

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        if not keys:
            return []
        values = self.client.mget([FATE_PREFIX + key for key in keys])
        return [json.loads(value) if value is not None else None for value in values]

    def put_succeeded(self, records: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        if not records:
            return
        if len(records) == 1:
            ((key, record),) = records
            self.client.set(FATE_PREFIX + key, dumps(record), ex=ttl_s)
            return
        keys = [FATE_PREFIX + key for key, _ in records]
        self._put_succeeded(keys=keys, args=[ttl_s, *(dumps(record) for _, record in records)])

    def put_failed(self, key: str, record: dict[str, Any], ttl_s: int) -> None:
        self._put_failed(keys=[FATE_PREFIX + key], args=[dumps(record), ttl_s])


class MemoryFates:
    """The embedded default's store: this process's memory (its broker is in-process too)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        now = time.monotonic()
        with self._lock:
            found = [self._records.get(key) for key in keys]
        return [json.loads(entry[1]) if entry and entry[0] > now else None for entry in found]

    def put_succeeded(self, records: Sequence[tuple[str, dict[str, Any]]], ttl_s: int) -> None:
        expires = time.monotonic() + ttl_s
        with self._lock:
            self._records.update((key, (expires, dumps(record))) for key, record in records)
            if len(self._records) > 10_000:  # drop the expired now and then: memory stays bounded
                now = time.monotonic()
                self._records = {k: v for k, v in self._records.items() if v[0] > now}

    def put_failed(self, key: str, record: dict[str, Any], ttl_s: int) -> None:
        with self._lock:
            current = self._records.get(key)
            if current and current[0] > time.monotonic() and json.loads(current[1])["status"] == "succeeded":
                return
            self._records[key] = (time.monotonic() + ttl_s, dumps(record))


MEMORY = MemoryFates()
"""The store of the in-process broker: one per process, as the broker."""

_stores: dict[str, RedisFates] = {}
_stores_lock = threading.Lock()
connection_class: Any = None
"""redis-py's connection class for the stores made here; None: redis-py's choice from the URL
(tests set a fakeredis connection, as they do on the transport's channel)."""


def fate_store_for(broker_url: str) -> FateStore | None:
    """The fate store of a broker: its Redis (a client kept per URL), this process's memory for
    ``memory://``, else None (another broker: fates are not kept)."""
    scheme = broker_url.split("://", 1)[0]
    if scheme == "memory":
        return MEMORY
    if scheme not in ("redis", "rediss"):
        return None
    with _stores_lock:
        if broker_url not in _stores:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # Once more at once, then give up: a worker never waits long on a record (redis-py's
            # default retries 10 times with backoff); the request's effect stands either way.
            options: dict[str, Any] = {
                "socket_timeout": 5,
                "socket_connect_timeout": 5,
                "retry": Retry(NoBackoff(), 1),
            }
            if connection_class is not None:
                options["connection_class"] = connection_class
            client = redis.Redis.from_url(broker_url, **options)
            _stores[broker_url] = RedisFates(client)
        return _stores[broker_url]


def succeeded(
    task: str, ids: Iterable[str], follow_ups: Iterable[str], *, replayed: bool, at: int
) -> dict[str, Any]:
    return {
        "status": "succeeded",
        "task": task,
        "ids": list(ids),
        "follow_ups": list(follow_ups),
        "replayed": replayed,
        "at": at,
    }


def failed(task: str, error: dict[str, Any], *, retryable: bool, at: int) -> dict[str, Any]:
    return {"status": "failed", "task": task, "error": error, "retryable": retryable, "at": at}


@dataclass(frozen=True, slots=True)
class Fate:
    """What became of a request (and of the follow-ups it asked for)."""

    key: str
    """The idempotency key asked about (several, joined by a comma, for a list call's messages)."""
    status: Status
    ids: tuple[str, ...] = ()
    """The ids the request created or acted on, with those of its follow-ups (a chain's every
    invoice), in the order they were made; so far, while pending."""
    error: dict[str, Any] | None = None
    """For a failure, as ``billing failures`` shows it: Stripe's ``type``, ``code``, ``field``,
    ``message``, and the error's ``class`` (``domain.errors``)."""
    task: str | None = None
    """The task name of the request asked about (the first one's, for several)."""
    requests: int = 0
    """How many requests the fate gathers (the request and its follow-ups) known so far."""
    pending: tuple[str, ...] = ()
    """The keys still pending (a chain's next part, a request not done yet)."""
    failed_key: str | None = None
    """The key whose failure this is (a follow-up's, when a later part failed)."""
    records: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status != "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": "request_fate",
            "idempotency_key": self.key,
            "status": self.status,
            "task": self.task,
            "ids": list(self.ids),
            "error": self.error,
            "failed_key": self.failed_key,
            "pending": list(self.pending),
            "requests": self.requests,
        }


def resolve(store: FateStore, keys: Sequence[str], known: dict[str, dict[str, Any]] | None = None) -> Fate:
    """The fate of the requests ``keys`` and every follow-up they asked for: failed if any
    failed, else pending if any is, else succeeded. One round trip per level of follow-ups.
    ``known``: succeeded records read before (they never change), not read again."""
    records: dict[str, dict[str, Any]] = dict(known or {})
    order: list[str] = []
    seen: set[str] = set()
    frontier = list(dict.fromkeys(keys))
    while frontier and len(seen) < MAX_PARTS:
        seen.update(frontier)
        unread = [key for key in frontier if key not in records]
        for key, record in zip(unread, store.get_many(unread), strict=True):
            if record is not None:
                records[key] = record
        following: list[str] = []
        for key in frontier:
            order.append(key)
            record = records.get(key)
            if record is not None and record.get("status") == "succeeded":
                following.extend(k for k in record.get("follow_ups", ()) if k not in seen)
        frontier = list(dict.fromkeys(following))
    ids: list[str] = []
    pending: list[str] = []
    failure: tuple[str, dict[str, Any]] | None = None
    for key in order:
        record = records.get(key)
        if record is None:
            pending.append(key)
        elif record.get("status") == "failed":
            failure = failure or (key, record)
        else:
            ids.extend(record.get("ids", ()))
    first = records.get(order[0]) if order else None
    status: Status = "failed" if failure else "pending" if pending else "succeeded"
    return Fate(
        key=",".join(dict.fromkeys(keys)),
        status=status,
        ids=tuple(dict.fromkeys(ids)),
        error=failure[1].get("error") if failure else None,
        task=first.get("task") if first else None,
        requests=len(order),
        pending=tuple(pending),
        failed_key=failure[0] if failure else None,
        records={k: v for k, v in records.items() if v.get("status") == "succeeded"},
    )
