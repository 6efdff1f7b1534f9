"""The worker's side of each request's fate (``tasks.fates``): written after the commit.

A request that succeeded writes its record once its transaction has committed and its
follow-ups are published (``BillingTask.perform``); requests a worker took together write
theirs with one command per batch (``BillingBatchTask.run_batch``). A failure writes its
record once its ``task_failures`` row is committed (``worker.failures.record_failure``), for
every path that records one: a task's error, a hard time limit, a refused queue entry whose
key can be read. Both are written before the message is acknowledged, so a worker killed in
between has the message redelivered, and its replay writes the record.

A fate that cannot be written (Redis unreachable just then) is logged and left out: the
request's effect and its failure record stand, and its fate reads pending until it expires.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from domain.errors import error_type
from tasks import fates
from tasks.contracts import parse
from tasks.envelope import clean_text
from tasks.operations import contract_of
from worker import clock
from worker.db import table_of
from worker.services.base import Outcome
from worker.settings import get_settings
from worker.tables import IdempotencyKey, OutboxMessage, TaskFailure

log = logging.getLogger("billing.fates")

Record = tuple[str, dict[str, Any]]
MAX_KEY_LENGTH = 255 + len(":part") + 10
"""An idempotency key (255 at most) and a chain part's suffix: longer is not a request's key."""


_PART = re.compile(r"(?s)(.*):part([0-9]+)")
"""A chain's later part's key: ``<key>:part<n>``."""


def _store() -> fates.FateStore | None:
    return fates.fate_store_for(get_settings().broker_url)


def succeeded(task_name: str, outcome: Outcome, payload: dict[str, Any]) -> Record | None:
    """The record of a committed request: the id it made or acted on (a list call: its items')
    and the keys of the follow-ups it asked for."""
    if outcome.key is None:
        return None
    ids = [outcome.id] if outcome.id else _item_ids(payload)
    part = _PART.fullmatch(outcome.key)
    continued = f"{part.group(1) if part else outcome.key}:"
    # The follow-ups that continue the request, keyed after it (a chain's next part, a pending
    # run's currencies); side work it set off (an invoice's PDF and email, keyed document:/email:)
    # has fates of its own and does not hold this one pending.
    follow_ups = [f.key for f in outcome.follow_ups if f.key.startswith(continued)]
    return outcome.key, fates.succeeded(task_name, ids, follow_ups, replayed=outcome.replayed, at=clock.now())


def _item_ids(payload: dict[str, Any]) -> list[str]:
    items = payload.get("items")
    if not isinstance(items, list):
        return []
    return [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


def write_succeeded(records: Sequence[Record]) -> None:
    """Write these records in one round trip; never raises (see the module's docstring)."""
    if not records:
        return
    try:
        store = _store()
        if store is not None:
            store.put_succeeded(records, get_settings().fate_ttl_s)
    except Exception as exc:
        log.warning(
            "could not write %d fates (%s: %s); they read pending", len(records), type(exc).__name__, exc
        )


def request_key_of(task_name: str, payload: Any) -> str | None:
    """The key a request's fate is kept under: its contract's ``request_key`` (a chain's later
    part: ``<key>:part<n>``), else, for a payload its contract refuses, the ``idempotency_key``
    it names when that is a clean string; None when there is none."""
    if not isinstance(payload, dict):
        return None
    try:
        return parse(contract_of(task_name), payload).request_key
    except Exception:
        key = payload.get("idempotency_key")
        return key if clean_text(key, MAX_KEY_LENGTH) else None


def write_failed(key: str | None, task_name: str, error: dict[str, Any], *, retryable: bool) -> None:
    """Write a failed record for ``key`` (unless it succeeded before); never raises."""
    if key is None:
        return
    try:
        store = _store()
        if store is not None:
            record = fates.failed(task_name, error, retryable=retryable, at=clock.now())
            store.put_failed(key, record, get_settings().fate_ttl_s)
    except Exception as exc:
        log.warning("could not write the fate of %s (%s: %s); it reads pending", key, type(exc).__name__, exc)


def _follow_ups_of(key: str, outbox_keys: set[str]) -> list[str]:
    """What ``key`` asked for, among the outbox keys that begin with ``<key>:``: its chain's next
    part (``<base>:part<n+1>``), and other follow-ups named ``<key>:<suffix>`` (a pending run's
    currencies), each a request whose own key starts the next level."""
    part = _PART.fullmatch(key)
    base, number = (part.group(1), int(part.group(2))) if part else (key, 1)
    following = [f"{base}:part{number + 1}"] if f"{base}:part{number + 1}" in outbox_keys else []
    for child in sorted(outbox_keys):
        suffix = child[len(key) + 1 :]
        if child.startswith(f"{key}:") and ":" not in suffix and not re.fullmatch(r"part[0-9]+", suffix):
            following.append(child)
    return following


class DatabaseFates:
    """Fates read from the worker's database, for the operator (``billing fate --database``, and
    the embedded default, whose in-process store no other process sees): a request succeeded
    when its idempotency key is stored (its resource's id), failed when a ``task_failures`` row
    names its key, and follow-ups are the outbox rows keyed ``<key>:<suffix>`` (a chain's next
    invoices, a pending run's currencies). Read-only; ids of a list call's items are not kept."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_many(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        return [self._record(key) for key in keys]

    def _record(self, key: str) -> dict[str, Any] | None:
        row = self.session.get(IdempotencyKey, key)
        if row is not None:
            outbox = table_of(OutboxMessage).c.key
            part = _PART.fullmatch(key)
            prefix = f"{part.group(1) if part else key}:"  # a chain's parts, or this key's follow-ups
            children = self.session.execute(
                select(outbox).where(outbox.startswith(prefix, autoescape=True))
            ).scalars()
            return fates.succeeded(
                row.operation,
                [row.resource_id] if row.resource_id else [],
                _follow_ups_of(key, set(children)),
                replayed=False,
                at=row.created,
            )
        payload_key = table_of(TaskFailure).c.payload["idempotency_key"].as_string()
        named = {key, key.rpartition(":part")[0] or key}
        failures = self.session.execute(
            select(TaskFailure).where(payload_key.in_(named)).order_by(col(TaskFailure.last_seen).desc())
        ).scalars()
        for failure in failures:
            if request_key_of(failure.task_name, failure.payload) == key:
                error = {
                    "type": error_type(failure.error_type),
                    "code": failure.error_code,
                    "field": failure.error_field,
                    "message": failure.error_message,
                    "class": failure.error_type,
                }
                return fates.failed(
                    failure.task_name, error, retryable=failure.retryable, at=failure.last_seen
                )
        return None

    def put_succeeded(self, records: Sequence[Record], ttl_s: int) -> None:
        raise TypeError("fates are read from the database, never written there")

    def put_failed(self, key: str, record: dict[str, Any], ttl_s: int) -> None:
        raise TypeError("fates are read from the database, never written there")
