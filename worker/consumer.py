"""The worker's message consumer: messages refused before any task runs are recorded too.

On Redis the transport refuses malformed entries before Celery sees them (``tasks.envelope``)
and this consumer records them (``worker.quarantine``): at once, and every
``REFUSED_DRAIN_INTERVAL_S`` for what a failed attempt left. Celery itself logs and drops
a message it cannot decode, one naming an unknown task, and one with an invalid body
(on any broker), and skips one whose ``expires`` has passed or that an operator revoked.
Each of those is a request that will never succeed, so it also gets a ``task_failures`` row
(beat jobs excepted: they expire on purpose, and the next tick asks again). README:
Reliability.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked
from celery.worker.consumer import Consumer

from domain.errors import BadRequest
from tasks.operations import OPERATIONS
from worker.failures import excerpt, record_failure
from worker.quarantine import client_for, drain_quietly

log = logging.getLogger("billing.consumer")

REFUSED_DRAIN_INTERVAL_S = 30.0


def _record(message: Any, error: BaseException, body: Any = None) -> None:
    try:
        headers = message.headers if isinstance(message.headers, dict) else {}
        record_failure(
            task_id=str(
                headers.get("id") or message.properties.get("correlation_id") or message.delivery_tag
            ),
            task_name=str(headers.get("task") or "unknown"),
            payload={
                "content_type": str(message.content_type)[:100],
                **excerpt(repr(body) if body is not None else message.body or b""),
            },
            error=error,
            retryable=False,
        )
    except Exception:
        log.exception("could not record a refused message")


class BillingConsumer(Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.app.conf.broker_url
        if url.startswith(("redis://", "rediss://")):
            self.timer.call_repeatedly(REFUSED_DRAIN_INTERVAL_S, lambda: drain_quietly(client_for(url)))
            self.timer.call_after(0.1, lambda: drain_quietly(client_for(url)))  # what a previous worker left

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _record(message, BadRequest(f"refused message of content type {message.content_type!r}: {exc}"))
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        _record(message, BadRequest(f"unknown task {name!r}", field="task"), body)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _record(message, BadRequest(f"invalid task message: {exc}"), body)
        super().on_invalid_task(body, message, exc)


class RequestDropped(Exception):
    """A request Celery skipped without running it: expired, or revoked by an operator."""


@task_revoked.connect(weak=False)
def _record_dropped_request(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
    operation = OPERATIONS.get(getattr(sender, "name", None) or "")
    if operation is None or operation.kind != "request" or request is None:
        return
    why = "its expires time passed before a worker ran it" if expired else "it was revoked before it ran"
    try:
        args, kwargs = list(request.args or ()), request.kwargs or {}
        record_failure(
            task_id=str(request.id),
            task_name=operation.name,
            payload={**kwargs, "__args__": args} if args else kwargs,
            error=RequestDropped(f"{operation.name} was skipped: {why}; retry it to apply it"),
            retryable=True,
        )
    except Exception:
        log.exception("could not record a skipped request")
