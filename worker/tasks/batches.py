"""Operations whose messages a worker takes together (``Batching`` in ``tasks.operations``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Retry
from celery.states import FAILURE, RETRY, SUCCESS
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

from domain.errors import BadRequest, BillingError
from tasks.contracts import parse
from tasks.operations import contract_of
from worker.outbox import mark_published
from worker.services.base import Outcome
from worker.services.registry import run_together
from worker.settings import get_settings
from worker.tasks.base import BillingTask, fates_together

log = logging.getLogger("billing.tasks")


class BillingBatchTask(Batches, BillingTask):  # type: ignore[misc]  # celery-batches publishes no types
    """Messages taken together: one transaction for many messages.

    The worker buffers up to ``batch_size`` messages (or what arrived within
    ``batch_interval``; both name settings, per task) and settles them in one transaction,
    each message with its own idempotency key. A message that cannot be settled that way
    (bad input, a replay, a redelivery, a retry, a twin in flight, whatever its operation's
    ``run_together`` leaves) then runs alone through ``perform``, exactly as a one-message
    task would: same retries, same failure records. So does a message whose follow-ups
    could not be published after the commit: its replay asks for them again. Messages are
    acknowledged only after that, so a worker killed mid-batch gets them all redelivered
    (late ack); the idempotency keys make the redelivery harmless.

    Prefetch: a buffered message is unacknowledged, so it would hold one of the worker's
    prefetch slots (1 per pool process) and starve the pool. Like Celery does for ETA
    tasks, each buffered message raises the prefetch by one until it is acknowledged, up to
    two batches' worth, which also bounds what the worker holds in memory.
    """

    batch_size = "item_batch_size"
    batch_interval = "item_batch_interval_s"

    # Celery takes its Strategy by name or, as celery-batches gives it, as a method (celery-types: a name)
    def Strategy(self, task: Any, app: Any, consumer: Any) -> Any:  # type: ignore[override]
        settings = get_settings()
        self.flush_every = getattr(settings, self.batch_size)
        self.flush_interval = getattr(settings, self.batch_interval)
        self._consumer = consumer
        self._raised = 0
        handler = super().Strategy(task, app, consumer)  # type: ignore[operator]  # Batches.Strategy

        def on_message(*args: Any, **kwargs: Any) -> None:
            if consumer.qos is not None and self._raised < 2 * self.flush_every:
                consumer.qos.increment_eventually()
                self._raised += 1
            handler(*args, **kwargs)

        return on_message

    def apply(self, *args: Any, **options: Any) -> Any:
        """Eager (tests, scripts): the one message runs as a task of its own would."""
        return Task.apply(self, *args, **options)

    @staticmethod
    def is_batch(args: tuple[Any, ...], payload: dict[str, Any]) -> bool:
        """Called by the batching strategy (a list of requests), not with a message's body:
        a JSON message cannot carry ``SimpleRequest`` objects."""
        return (
            len(args) == 1
            and not payload
            and isinstance(args[0], list)
            and all(isinstance(r, SimpleRequest) for r in args[0])
        )

    def _release(self) -> None:
        if self._raised > 0 and self._consumer.qos is not None:
            self._consumer.qos.decrement_eventually()
            self._raised -= 1

    def flush(self, requests: Any) -> Any:
        """Acknowledge after the batch returns each message's state; requeue all if it raised
        or its process died. Each message is reported to a monitor (Flower) as a task of
        its own: received and started when the batch starts, then succeeded, failed or
        retried as it ended."""
        requests = list(requests)
        started = time.monotonic()
        for request in requests:
            request.send_event(
                "task-received", name=request.name, args=request.argsrepr, kwargs=request.kwargsrepr,
                retries=request.request_dict.get("retries", 0), root_id=request.root_id,
                parent_id=request.parent_id,
            )  # fmt: skip
            request.send_event("task-started")

        def on_return(result: Any) -> None:
            runtime = time.monotonic() - started
            for request in requests:
                if isinstance(result, dict):
                    request.acknowledge()
                    state, detail = result.get(request.id, (SUCCESS, None))
                    if state == SUCCESS:
                        request.send_event("task-succeeded", result=None, runtime=runtime)
                    elif state == RETRY:
                        request.send_event("task-retried", exception=detail, traceback=None)
                    else:
                        request.send_event("task-failed", exception=detail, traceback=None)
                else:
                    request.reject(requeue=True)
                self._release()

        def on_error(*_: Any) -> None:
            on_return(None)

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            callback=on_return,
            error_callback=on_error,
        )

    def run_batch(self, requests: list[SimpleRequest]) -> dict[str, tuple[str, str | None]]:
        """Settle the messages, together where their operation can, else alone; returns each
        message's state (SUCCESS, RETRY or FAILURE, and the error) by task id. The fates of
        those that succeeded are written in one round trip, before any is acknowledged."""
        with fates_together():
            return self._run_batch(requests)

    def _run_batch(self, requests: list[SimpleRequest]) -> dict[str, tuple[str, str | None]]:
        alone: list[SimpleRequest] = []
        together: list[tuple[SimpleRequest, Any]] = []
        for request in requests:  # each checked alone: one bad request never holds back its mates
            try:
                info = request.delivery_info or {}
                if request.args or info.get("redelivered") or (request.request_dict or {}).get("retries"):
                    alone.append(request)
                    continue
                together.append((request, parse(contract_of(self.name), dict(request.kwargs))))
            except Exception:  # bad input, or a request no JSON producer could send: it runs alone
                alone.append(request)
        if together:
            try:
                settled = run_together(self.name, [command for _, command in together])
            except Exception as exc:
                log.warning("%s: batch of %d failed (%s: %s); each runs alone", self.name, len(together),
                            type(exc).__name__, exc)  # fmt: skip
                settled = [None] * len(together)
            published: list[str] = []
            for (request, _), outcome in zip(together, settled, strict=True):
                if outcome is None or not self._sent(request, outcome):
                    alone.append(request)
                else:
                    published += [follow_up.key for follow_up in outcome.follow_ups]
                    self.settled(outcome, request.kwargs)
            self._mark(published)
        states = {request.id: self._perform_alone(request) for request in alone}
        for request in requests:  # per message, as for a task of its own (the embedded worker counts them)
            signals.task_postrun.send(
                sender=self, task_id=request.id, task=self, args=request.args, kwargs=request.kwargs,
                retval=None, state=states.get(request.id, (SUCCESS, None))[0],
            )  # fmt: skip
        return states

    def _sent(self, request: SimpleRequest, outcome: Outcome) -> bool:
        """Publish a settled message's follow-ups; False if the broker refused (it runs alone).
        Their outbox rows are marked published for the whole batch at once (``_mark``)."""
        if not outcome.follow_ups:
            return True
        try:
            self.send_follow_ups(outcome, mark=False)
        except Exception as exc:
            log.warning("%s [%s]: follow-ups not sent (%s: %s); it runs alone", self.name, request.id,
                        type(exc).__name__, exc)  # fmt: skip
            return False
        return True

    def _mark(self, keys: list[str]) -> None:
        """Mark the batch's published follow-ups in one transaction. Best effort: a row left
        unmarked is published once more by the reconciler, and its task replays."""
        if not keys:
            return
        try:
            mark_published(keys)
        except Exception as exc:
            log.warning("%s: %d follow-ups published but not marked (%s: %s); the reconciler sends them"
                        " again", self.name, len(keys), type(exc).__name__, exc)  # fmt: skip

    def _perform_alone(self, request: SimpleRequest) -> tuple[str, str | None]:
        if not isinstance(request.kwargs, dict) or not isinstance(request.args, list | tuple):
            # Not a JSON object of keyword arguments: recorded as a task of its own would be
            # (on Redis the transport refuses such an entry before it gets here).
            self.push_request(id=request.id, called_directly=False)
            try:
                error = BadRequest("billing tasks take one JSON object of keyword arguments")
                self._record(
                    {"args": repr(request.args), "kwargs": repr(request.kwargs)}, error, retryable=False
                )
            finally:
                self.pop_request()
            return FAILURE, repr(error)
        self.push_request(
            id=request.id,
            args=list(request.args),
            kwargs=dict(request.kwargs),
            delivery_info=request.delivery_info,
            retries=(request.request_dict or {}).get("retries") or 0,
            hostname=request.hostname,
            reply_to=request.reply_to,
            correlation_id=request.correlation_id,
            called_directly=False,
            is_eager=bool((request.delivery_info or {}).get("is_eager")),
        )
        try:
            self.perform(dict(request.kwargs), tuple(request.args))
            return SUCCESS, None
        except Retry as retry:  # sent again with a countdown, like any retried task
            sig = retry.sig  # type: ignore[attr-defined]  # set by Celery; celery-types leaves it out
            if self.request.is_eager and sig is not None:
                sig.apply()  # eager (tests): Celery's apply() would run the retry now
            return RETRY, str(retry)
        except BillingError as exc:
            log.info("%s [%s]: %s", self.name, request.id, exc)  # recorded in task_failures
            return FAILURE, repr(exc)
        except Exception as exc:
            log.exception("%s [%s] failed", self.name, request.id)  # recorded too; acked like a failed task
            return FAILURE, repr(exc)
        finally:
            self.pop_request()
