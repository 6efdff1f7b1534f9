"""The one way a billing task runs: parse the contract, run the service, publish follow-ups.

Outcomes by error kind:
- ``BillingError`` (bad input, not found, wrong state, key conflict): final. Nothing is
  written but a ``task_failures`` row; the task fails and the message is acknowledged.
  Two exceptions, for what may still be on its way in another queue: a customer or
  invoice that is not there yet (``NotFound`` on a reference, unless it was deleted:
  that one is final at once), and the items of an
  invoice request that finds nothing pending (``NothingToInvoice``). Both are retried
  a few times with backoff before they are recorded.
- Infrastructure trouble (database or broker unreachable, lock timeout, serialisation
  failure): retried with exponential backoff and jitter, then recorded as a failure.
- Anything else is a bug: recorded with its payload and re-raised, never swallowed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from domain.errors import BadRequest, BillingError, NotFound, NothingToInvoice, TransientError
from tasks.contracts import parse
from tasks.operations import contract_of, queue_for
from tasks.redaction import redacted, redaction_on
from worker import clock
from worker.db import UnitOfWork
from worker.failpoints import failpoint
from worker.failures import count_redelivery, record_failure
from worker.fates import Record, succeeded, write_succeeded
from worker.outbox import mark_published
from worker.services.base import FollowUp, Outcome, write_outbox
from worker.services.registry import run
from worker.settings import Settings, get_settings

log = logging.getLogger("billing.tasks")
T = TypeVar("T")

REFERENCE_FIELDS = frozenset(
    {
        "customer",
        "invoice",
        "credit_note",
        "product",
        "price",
        "subscription",
        "test_clock",
        "webhook_endpoint",
    }
)
TRANSIENT = (TransientError, OperationalError, BrokerError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in ("40001", "40P01", "55P03")
    )


def backoff(retries: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retries)].

    Never more than half the broker's visibility timeout: a retry waits in the worker as
    an unacked message with an ETA, and Redis would hand a copy of it to another worker
    once the timeout passed (each copy counted as a redelivery, towards parking).
    """
    cap = min(cap, get_settings().visibility_timeout_s / 2)
    return random.uniform(0, min(cap, base * 2**retries))


def in_flight_wait(exc: BillingError, retries: int, settings: Settings) -> float | None:
    """How long to wait before looking again for what ``exc`` says is missing, when it
    may be in flight: ``None`` when it cannot be, or the budget is spent."""
    missing = isinstance(exc, NotFound) and not exc.deleted
    if missing and (exc.field or "").rpartition(".")[2] in REFERENCE_FIELDS:
        if retries < settings.missing_reference_retries:
            return backoff(retries, base=0.5, cap=60) or 0.01
    elif isinstance(exc, NothingToInvoice) and retries < settings.nothing_pending_retries:
        return backoff(retries, base=1.0, cap=30) or 0.01
    return None


_batch = threading.local()
"""While a batch runs in this thread (``BillingBatchTask.run_batch``): ``fates``, the records of
its requests, written together at its end (a task object is shared by a pool's threads)."""


@contextmanager
def fates_together() -> Iterator[None]:
    """Within, the fates of the requests this thread settles are kept, then written together in
    one round trip at the end (``BillingBatchTask.run_batch``)."""
    records: list[Record] = []
    _batch.fates = records
    try:
        yield
    finally:
        _batch.fates = None
        write_succeeded(records)


class Unpublished(Exception):
    """A retry the broker would not take: the task retries in its own process instead."""

    def __init__(self, countdown: float, reason: object) -> None:
        super().__init__(f"retry not published: {reason}")
        self.countdown, self.reason = countdown, reason


if TYPE_CHECKING:
    _Task = Task[..., Any]  # generic in celery-types only: Celery's class takes no parameters
else:
    _Task = Task


class BillingTask(_Task):
    # Our settings bound the retries. Celery's own default (3) must not: past it,
    # ``retry()`` re-raises the original error, which would skip recording the failure.
    max_retries = None
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    throws = (BillingError,)  # expected failures: logged without a traceback
    Request = "worker.tasks.timeouts:BillingRequest"  # a task killed at its hard time limit is recorded

    def perform(self, payload: dict[str, Any], args: tuple[Any, ...] = ()) -> dict[str, Any]:
        """Run the operation named like this task on ``payload`` (the message's keyword arguments).

        Task functions take ``(self, /, *args, **payload)`` so that no message, however
        malformed, fails in the call itself before it can be recorded.

        A retry is a new message; when the broker refuses it (maxmemory, an ACL, an outage),
        Celery would reject the original without requeue, and lose it. Here the retry is
        made in this process instead, after the same wait: the original stays unacknowledged
        until it ends (a worker killed meanwhile has it redelivered). README: Reliability.
        """
        while True:
            try:
                return self._attempt(payload, args)
            except Unpublished as unpublished:
                log.warning(
                    "%s [%s]: the broker refused the retry (%s); retrying here in %.1f s, the message"
                    " still unacknowledged", self.name, self.request.id, unpublished.reason,
                    unpublished.countdown,
                )  # fmt: skip
                time.sleep(unpublished.countdown)
                self.request.retries = (self.request.retries or 0) + 1

    def retry_later(self, exc: Exception, countdown: float) -> Exception:
        """Celery's ``retry``, raised; ``Unpublished`` when the broker refused the new message."""
        try:
            return self.retry(exc=exc, countdown=countdown)
        except Reject as refused:  # raised by ``retry`` only when publishing failed
            raise Unpublished(countdown, refused.args[0] if refused.args else refused) from exc

    def _attempt(self, payload: dict[str, Any], args: tuple[Any, ...]) -> dict[str, Any]:
        settings = get_settings()
        outcome = self._guarded(
            payload,
            args,
            lambda: run(
                self.name, payload, redeliveries=self._redeliveries(), redelivery_cap=settings.redelivery_cap
            ),
        )
        self.publish(outcome)
        self.settled(outcome, payload)
        return outcome.as_result()

    def _guarded(self, payload: dict[str, Any], args: tuple[Any, ...], body: Callable[[], T]) -> T:
        """Run ``body`` (the operation) with the task's error rules: a billing error is recorded
        (or retried while what it misses may be in flight), infrastructure trouble is retried
        with backoff, anything else is recorded and re-raised."""
        settings = get_settings()
        retries = self.request.retries or 0
        try:
            failpoint("task_start", self.name)
            if args:
                raise BadRequest(
                    "billing tasks take one JSON object of keyword arguments, not positional ones"
                )
            return body()
        except BillingError as exc:
            if wait := in_flight_wait(exc, retries, settings):
                raise self.retry_later(exc, wait) from exc
            self._record({**payload, "__args__": list(args)} if args else payload, exc, retryable=False)
            raise
        except Exception as exc:
            if is_transient(exc) and retries < settings.max_retries:
                log.warning("%s: transient %s, retry %d: %s", self.name, type(exc).__name__, retries + 1, exc)
                raise self.retry_later(exc, backoff(retries)) from exc
            self._record(payload, exc, retryable=is_transient(exc))
            raise

    def settled(self, outcome: Outcome, payload: dict[str, Any]) -> None:
        """Write the fate of a request committed and published (within a batch: at its end)."""
        record = succeeded(self.name, outcome, payload)
        if record is None:
            return
        batch: list[Record] | None = getattr(_batch, "fates", None)
        if batch is not None:
            batch.append(record)
        else:
            write_succeeded([record])

    def publish(self, outcome: Outcome) -> None:
        """Send follow-ups after the commit (they are in the outbox already).

        If the broker refuses, retry the whole task: its replay finds the work done and
        asks for the same follow-ups again. Should this process die first, the message
        is redelivered (late ack), and failing that the reconciler publishes the rows.
        """
        try:
            self.send_follow_ups(outcome)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self.retry_later(exc, backoff(self.request.retries or 0)) from exc

    def send_follow_ups(self, outcome: Outcome, *, mark: bool = True) -> None:
        """Publish the follow-ups, then mark their outbox rows published (``mark=False``: the
        caller marks those of many outcomes at once, as a batch does)."""
        failpoint("before_publish", self.name)
        for follow_up in outcome.follow_ups:
            self.app.send_task(
                follow_up.task_name,
                kwargs=follow_up.payload,
                queue=queue_for(follow_up.task_name),
                task_id=follow_up.task_id,
            )
        if mark and outcome.follow_ups:
            mark_published([follow_up.key for follow_up in outcome.follow_ups])

    def _redeliveries(self) -> int:
        """How often this message came back without finishing (its worker was killed, or it
        outlived the visibility timeout); counted only when it does come back."""
        delivery_info = self.request.delivery_info or {}
        if not (delivery_info.get("redelivered") or getattr(self.request, "redelivered", False)):
            return 0
        return count_redelivery(self.request.id or "unknown", self.name)

    def deliver(
        self, service: Callable[[Any], dict[str, Any]], payload: dict[str, Any], args: tuple[Any, ...] = ()
    ) -> dict[str, Any]:
        """One try of a webhook delivery (``worker.services.webhooks``): what the receiver does is
        recorded as an attempt, not raised; infrastructure trouble retries the task as elsewhere.
        A try cut short (this process killed) is tried again when its claim expires."""
        return self._guarded(payload, args, lambda: service(parse(contract_of(self.name), payload)))

    def maintain(self, job: Callable[[Session, int, Settings], list[FollowUp]]) -> dict[str, Any]:
        """Run a beat job in one transaction, then publish what it asks for.

        What was published before and is not done yet (``FollowUp.republish``) is sent again
        only when its queue holds no message: while the queue holds some, the first copy may
        be among them (a documents queue thousands deep takes hours to drain), and sending a
        copy every few minutes would grow the queue faster than it drains. Once the queue is
        empty and the row still open, its message was lost, and the copy goes."""
        with UnitOfWork() as uow:
            now = clock.now()
            follow_ups = write_outbox(uow.session, job(uow.session, now, get_settings()), now)
            uow.commit()
        busy = self._busy_queues({queue_for(f.task_name) for f in follow_ups if f.republish})
        sent = [f for f in follow_ups if not (f.republish and queue_for(f.task_name) in busy)]
        self.publish(Outcome(None, follow_ups=sent))
        return {"published": len(sent), "left_queued": len(follow_ups) - len(sent)}

    def _busy_queues(self, queues: set[str]) -> set[str]:
        """Those of ``queues`` that hold messages now (a queue the broker cannot count: busy)."""
        busy = set()
        with self.app.connection_for_write() as connection:
            channel: Any = connection.default_channel  # kombu's virtual channel (stubs: StdChannel)
            for queue in sorted(queues):
                try:
                    if channel.queue_declare(queue=queue, passive=True).message_count:
                        busy.add(queue)
                except ChannelError:  # Redis drops an empty queue's key
                    continue
                except Exception as exc:
                    log.warning("could not count queue %s (%s: %s); not republishing into it", queue,
                                type(exc).__name__, exc)  # fmt: skip
                    busy.add(queue)
        return busy

    def sweep(
        self, job: Callable[[Session, int, Settings, Any], tuple[list[FollowUp], Any]]
    ) -> dict[str, Any]:
        """Run a chunked beat job: one transaction per chunk, then publish what the chunk asks for.

        Not through the outbox: a sweep asks only for work that stays due until done, so
        a message lost on the way is asked for again by a later tick.
        """
        now, settings, cursor, published = clock.now(), get_settings(), None, 0
        while True:
            with UnitOfWork() as uow:
                follow_ups, cursor = job(uow.session, now, settings, cursor)
                uow.commit()
            for follow_up in follow_ups:
                self.app.send_task(
                    follow_up.task_name, kwargs=follow_up.payload, queue=queue_for(follow_up.task_name)
                )
            published += len(follow_ups)
            if cursor is None:
                return {"published": published}

    def _record(self, payload: Any, exc: BaseException, *, retryable: bool) -> None:
        try:
            record_failure(
                task_id=self.request.id or "unknown",
                task_name=self.name,
                payload=payload,
                error=exc,
                retryable=retryable,
            )
        except Exception:
            log.exception(  # the payload is kept here, without personal data (README: Operations)
                "%s [%s]: could not record the failure; payload=%r", self.name, self.request.id,
                redacted(payload) if redaction_on() else payload,
            )  # fmt: skip
