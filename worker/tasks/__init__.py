"""The worker's tasks: one per row of ``tasks.operations``, registered on the app.

Every body is the same few lines, so none is written out per operation: a request runs
``BillingTask.perform`` (contract, service, follow-ups), a batched request also takes its
messages together (``BillingBatchTask``), a beat job runs its service in one transaction
(``maintain``) or in chunks (``sweep``). What differs lives in the operation's row and its
service (``worker.services.registry`` finds it by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from tasks.operations import OPERATIONS, Operation
from worker.services.registry import SERVICES
from worker.tasks.base import BillingTask
from worker.tasks.batches import BillingBatchTask

__all__ = ["BillingBatchTask", "BillingTask", "register"]


def _body(operation: Operation) -> Callable[..., Any]:
    service = SERVICES[operation.name]
    body: Callable[..., Any]
    if operation.kind == "job":

        def job(self: BillingTask) -> dict[str, Any]:
            return self.maintain(service)

        body = job
    elif operation.kind == "sweep":

        def sweep(self: BillingTask) -> dict[str, Any]:
            return self.sweep(service)

        body = sweep
    elif operation.kind == "delivery":

        def delivery(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
            return self.deliver(service, payload, args)

        body = delivery
    elif operation.batching:

        def batched(self: BillingBatchTask, /, *args: Any, **payload: Any) -> Any:
            # Task functions take ``(self, /, *args, **payload)`` so that no message, however
            # malformed, fails in the call itself before it can be recorded.
            if self.is_batch(args, payload):
                return self.run_batch(args[0])
            return self.perform(payload, args)

        body = batched
    else:

        def request(self: BillingTask, /, *args: Any, **payload: Any) -> dict[str, Any]:
            return self.perform(payload, args)

        body = request
    body.__name__ = body.__qualname__ = f"{operation.resource}_{operation.verb}"
    body.__doc__ = f"{operation.name}: see {service.__module__}.{service.__name__}."
    return body


def register(app: Celery) -> None:
    """Register every operation's task on ``app`` under its stable name."""
    for operation in OPERATIONS.values():
        options: dict[str, Any] = {"name": operation.name, "bind": True, "base": BillingTask}
        if operation.batching:
            options.update(
                base=BillingBatchTask,
                batch_size=operation.batching.size,
                batch_interval=operation.batching.interval,
            )
        app.task(**options)(_body(operation))
