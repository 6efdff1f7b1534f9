"""Queue entries the transport refused: each becomes a ``task_failures`` row, then leaves Redis.

The transport (``tasks.broker``) never hands Celery an entry it could not process (not
JSON, a broken envelope, a body that is not ``[args, kwargs, embed]``): it moves the
entry, atomically, from its queue (or the unacked hash) to the refused list
``_billing.refused``. The worker drains that list here: an entry is removed only after
its row is committed, so a worker killed in between records it again on the next drain
(the same row: it is keyed by the entry's task id, or its sequence number). Runs in the
worker's main process, called by the transport right after a refusal, and by a timer
for what a failed attempt (database down) left behind. README: Reliability.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import redis

from domain.errors import BadRequest
from tasks.broker import REFUSED_KEY
from tasks.envelope import MAX_ID_LENGTH, MAX_NAME_LENGTH, clean_text
from worker.failures import excerpt, record_failure
from worker.fates import request_key_of

log = logging.getLogger("billing.quarantine")

DRAIN_LIMIT = 100
"""Entries recorded per call: a flood of refusals must not hold the main process for long."""


def _identity(raw: bytes, seq: str) -> tuple[str, str, str | None]:
    """(task id, task name, request key) read from the entry when it names them cleanly, else the
    sequence number, ``unknown`` and None. The key is read from a body that still decodes (its
    ``[args, kwargs, embed]``' kwargs), so that the refused request's fate says failed."""
    task_id, task_name, key = f"refused:{seq}", "unknown", None
    try:
        entry = json.loads(raw)
        headers = entry.get("headers")
        if isinstance(headers, dict):
            if clean_text(headers.get("id"), MAX_ID_LENGTH):
                task_id = headers["id"]
            if clean_text(headers.get("task"), MAX_NAME_LENGTH):
                task_name = headers["task"]
        body = json.loads(base64.b64decode(entry["body"], validate=True))
        if isinstance(body, list) and len(body) >= 2:
            key = request_key_of(task_name, body[1])
    except (Exception, RecursionError):
        pass
    return task_id, task_name, key


def record_entry(wrapped: bytes) -> None:
    """Record one entry of the refused list (``seq\\nqueue\\nreason\\nraw``)."""
    seq, queue, reason, raw = [*wrapped.split(b"\n", 3), b"", b"", b""][:4]
    task_id, task_name, key = _identity(raw, seq.decode("ascii", "replace"))
    record_failure(
        task_id=task_id,
        task_name=task_name,
        payload={"queue": queue.decode("utf-8", "replace"), **excerpt(raw)},
        error=BadRequest(f"refused queue entry: {reason.decode('utf-8', 'replace')}", field="message"),
        retryable=False,
        fate_key=key,
    )


def drain(client: Any) -> int:
    """Record the oldest refused entries, up to ``DRAIN_LIMIT``; returns how many were recorded."""
    recorded = 0
    for wrapped in client.lrange(REFUSED_KEY, -DRAIN_LIMIT, -1)[::-1]:
        record_entry(wrapped)
        client.lrem(REFUSED_KEY, -1, wrapped)
        recorded += 1
    return recorded


_clients: dict[str, Any] = {}


def client_for(url: str) -> Any:
    """A client of the broker at ``url`` (kept: the timer drains every few seconds)."""
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=10)
    return _clients[url]


def drain_quietly(client: Any) -> None:
    """The timer's and the transport's call: never raises (what is left waits for the next)."""
    try:
        if recorded := drain(client):
            log.info("recorded %d refused queue entries", recorded)
    except Exception:
        log.exception("could not record refused queue entries; they wait on %s", REFUSED_KEY)
