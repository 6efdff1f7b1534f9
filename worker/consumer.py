"""The worker's message consumer: messages refused before any task runs are recorded too.

Celery logs and drops a message it cannot decode (not JSON: ``accept_content`` is
JSON only), one naming an unknown task, and one with an invalid body. Each of those is
a request that will never succeed, so it also gets a ``task_failures`` row.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from domain.errors import BadRequest
from worker.failures import record_failure

log = logging.getLogger("billing.consumer")


def _record(message: Any, error: BaseException, body: Any = None) -> None:
    headers = message.headers or {}
    try:
        record_failure(
            task_id=str(
                headers.get("id") or message.properties.get("correlation_id") or message.delivery_tag
            ),
            task_name=str(headers.get("task") or "unknown"),
            payload={
                "content_type": message.content_type,
                "body": repr(body if body is not None else message.body)[:10_000],
            },
            error=error,
            retryable=False,
        )
    except Exception:
        log.exception("could not record a refused message")


class BillingConsumer(Consumer):
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
