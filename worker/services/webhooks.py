"""Webhook deliveries: one try of a delivery (``deliver``) and the retry sweep (``dispatch``).

A try is three steps, so that no database transaction stays open during an HTTP request
(on SQLite that would stop every writer for as long as a receiver takes):

1. **claim**, one short transaction under the endpoint's lock: the delivery must be pending,
   due and not claimed; the endpoint must have fewer than ``webhook_max_concurrency`` tries in
   flight (a claim counts as in flight until ``claimed_until``). The try is recorded as an
   ``in_progress`` attempt; a try left ``in_progress`` by a worker killed mid-request is marked
   ``abandoned``. The event is rendered and signed here.
2. **send**, outside any transaction (``worker.webhooks.post``, bounded by ``webhook_timeout_s``).
3. **record**, one transaction: the attempt's status, HTTP status, duration and error; the
   delivery succeeded, or is due again after the next wait of ``webhook_retry_schedule_s``, or
   failed once that schedule is spent. An endpoint whose tries all failed for
   ``webhook_disable_after_s`` is disabled, with the reason in ``disabled_reason`` and a warning
   in the log.

At least once: a worker killed between 1 and 3 lets the claim expire; the message comes back
(late acknowledgement) or the sweep publishes it again, and the next try sends it again, so
the receiver may see an event twice (it dedupes on the event ``id``), never zero times.
README: Webhooks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlmodel import Session, col

from domain.errors import BillingError
from domain.webhooks import next_retry_in
from tasks.contracts import WebhookDeliver
from tasks.webhooks import SIGNATURE_HEADER, signature_header
from worker import clock
from worker.db import UnitOfWork
from worker.failpoints import failpoint
from worker.services.base import FollowUp, close_outbox
from worker.settings import Settings, get_settings
from worker.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from worker.webhooks import DELIVER_TASK, Sent, deliver_follow_up, delivery_key, post

log = logging.getLogger("billing.webhooks")

DEFER_S = 1
"""An endpoint at its bound of tries in flight: the delivery is due again this much later."""


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: str
    endpoint_id: str
    attempt_id: int
    number: int
    url: str
    body: bytes
    headers: dict[str, str]


def render_event(session: Session, event_id: str) -> bytes:
    """The event exactly as ``billing get evt_…`` prints it, as compact JSON."""
    from worker.views import get_object

    event = get_object(session, event_id, kind="event")
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _lock_endpoint(session: Session, endpoint_id: str) -> WebhookEndpoint | None:
    """The endpoint's row, locked: claims for one endpoint queue up here, so the in-flight
    count they read is exact (SQLite: the transaction's BEGIN IMMEDIATE serialises them all)."""
    return session.execute(
        select(WebhookEndpoint)
        .where(col(WebhookEndpoint.id) == endpoint_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def claim(delivery_id: str, now: int, settings: Settings) -> Claim | str:
    """Take one try of the delivery, or say why not (a string)."""
    with UnitOfWork() as uow:
        session = uow.session
        close_outbox(session, [delivery_key(delivery_id)], now)
        endpoint_id = session.execute(
            select(col(WebhookDelivery.endpoint_id)).where(col(WebhookDelivery.id) == delivery_id)
        ).scalar()
        if endpoint_id is None:
            uow.commit()
            return "unknown delivery"
        endpoint = _lock_endpoint(session, endpoint_id)
        delivery = session.execute(
            select(WebhookDelivery)
            .where(col(WebhookDelivery.id) == delivery_id)
            .execution_options(populate_existing=True)
        ).scalar_one()
        assert endpoint is not None  # a foreign key
        why = _not_now(delivery, endpoint, now)
        if (
            why is None
            and _in_flight(session, endpoint.id, delivery.id, now) >= settings.webhook_max_concurrency
        ):
            delivery.next_attempt_at = now + DEFER_S
            delivery.dispatched_at = None
            why = "the endpoint has its bound of requests in flight: deferred"
        if why is not None:
            if delivery.status == "pending" and (endpoint.deleted or endpoint.status != "enabled"):
                delivery.status, delivery.completed_at = "canceled", now
                delivery.claimed_until = None
            session.add(delivery)
            uow.commit()
            return why
        session.execute(
            update(WebhookAttempt)
            .where(
                col(WebhookAttempt.delivery_id) == delivery.id, col(WebhookAttempt.status) == "in_progress"
            )
            .values(status="abandoned", error="the worker sending it was lost mid-request")
        )
        try:
            body = render_event(session, delivery.event_id)
        except BillingError as exc:  # the event is gone (it cannot be: events are never deleted)
            delivery.status, delivery.completed_at = "canceled", now
            session.add(delivery)
            uow.commit()
            return f"event unreadable: {exc}"
        delivery.attempts += 1
        delivery.claimed_until = now + math.ceil(settings.webhook_timeout_s) + settings.webhook_claim_margin_s
        delivery.dispatched_at = None
        attempt = WebhookAttempt(
            delivery_id=delivery.id,
            event_id=delivery.event_id,
            endpoint_id=endpoint.id,
            number=delivery.attempts,
            started_at=now,
        )
        session.add_all([delivery, attempt])
        session.flush()
        assert attempt.id is not None
        # signed at the wall clock's time, which receivers compare with theirs
        headers = {SIGNATURE_HEADER: signature_header(body, endpoint.secret, int(time.time()))}
        result = Claim(delivery.id, endpoint.id, attempt.id, delivery.attempts, endpoint.url, body, headers)
        uow.commit()
    return result


def _not_now(delivery: WebhookDelivery, endpoint: WebhookEndpoint, now: int) -> str | None:
    if delivery.status != "pending":
        return f"already {delivery.status}"
    if endpoint.deleted:
        return "the endpoint was deleted: canceled"
    if endpoint.status != "enabled":
        return "the endpoint is disabled: canceled"
    if delivery.claimed_until is not None and delivery.claimed_until > now:
        return "another worker is sending it"
    if delivery.next_attempt_at > now:
        return "not due yet"
    return None


def _in_flight(session: Session, endpoint_id: str, delivery_id: str, now: int) -> int:
    count: int = session.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(
            col(WebhookDelivery.endpoint_id) == endpoint_id,
            col(WebhookDelivery.status) == "pending",
            col(WebhookDelivery.claimed_until) > now,
            col(WebhookDelivery.id) != delivery_id,
        )
    ).scalar_one()
    return count


def record(taken: Claim, sent: Sent, now: int, settings: Settings) -> str:
    """The try's outcome, and what follows from it; returns the delivery's status."""
    with UnitOfWork() as uow:
        session = uow.session
        endpoint = _lock_endpoint(session, taken.endpoint_id)
        delivery = session.get(WebhookDelivery, taken.delivery_id)
        attempt = session.get(WebhookAttempt, taken.attempt_id)
        assert endpoint is not None and delivery is not None and attempt is not None
        attempt.http_status, attempt.duration_ms = sent.status, sent.duration_ms
        attempt.error, attempt.response_excerpt = sent.error, sent.excerpt
        if attempt.status == "abandoned":  # its claim expired first: another try has taken over
            attempt.error = f"answered after its claim expired: {sent.error or f'HTTP {sent.status}'}"
        else:
            attempt.status = "succeeded" if sent.ok else "failed"
        if delivery.status == "pending" and delivery.attempts == taken.number:
            delivery.claimed_until = None
            if sent.ok:
                delivery.status, delivery.completed_at = "succeeded", now
            else:
                wait = next_retry_in(settings.webhook_retry_schedule_s, delivery.attempts)
                if wait is None:
                    delivery.status, delivery.completed_at = "failed", now
                    log.warning(
                        "webhook delivery %s of %s to %s failed for good after %d tries",
                        delivery.id, delivery.event_id, endpoint.id, delivery.attempts,
                    )  # fmt: skip
                else:
                    delivery.next_attempt_at = now + wait
        if sent.ok:
            endpoint.failing_since = None
        else:
            _count_failure(endpoint, now, settings)
        session.add_all([endpoint, delivery, attempt])
        uow.commit()
        return delivery.status


def _count_failure(endpoint: WebhookEndpoint, now: int, settings: Settings) -> None:
    endpoint.failing_since = endpoint.failing_since or now
    failing_for = now - endpoint.failing_since
    if endpoint.status == "enabled" and failing_for >= settings.webhook_disable_after_s:
        endpoint.status = "disabled"
        endpoint.disabled_reason = (
            f"disabled by the worker: every delivery failed for {failing_for // 3600} hours"
            f" (since {endpoint.failing_since}); enable it again with"
            f" `billing webhooks update {endpoint.id} --enable`"
        )
        log.warning("webhook endpoint %s disabled: %s", endpoint.id, endpoint.disabled_reason)


def deliver(command: WebhookDeliver) -> dict[str, Any]:
    """One try of one delivery (the task ``billing.webhooks.deliver``)."""
    settings = get_settings()
    taken = claim(command.delivery, clock.now(), settings)
    if isinstance(taken, str):
        return {"delivery": command.delivery, "sent": False, "reason": taken}
    failpoint("after_claim", DELIVER_TASK)
    sent = post(
        taken.url,
        taken.body,
        taken.headers,
        timeout=settings.webhook_timeout_s,
        allow_private=settings.webhooks_allow_private,
    )
    failpoint("after_send", DELIVER_TASK)
    status = record(taken, sent, clock.now(), settings)
    if not sent.ok:
        log.info(
            "webhook delivery %s try %d to %s: %s",
            taken.delivery_id,
            taken.number,
            taken.endpoint_id,
            sent.error,
        )
    return {"delivery": taken.delivery_id, "sent": True, "http_status": sent.status, "status": status}


def dispatch(session: Session, now: int, settings: Settings, after: Any) -> tuple[list[FollowUp], Any]:
    """Beat sweep: publish a try of every pending delivery that is due, not being sent, and not
    published recently (a message lost with Redis is published again after
    ``webhook_redispatch_after_s``). Keyset pages through ``ix_webhook_deliveries_due``."""
    due = (
        select(col(WebhookDelivery.id), col(WebhookDelivery.next_attempt_at))
        .where(
            col(WebhookDelivery.status) == "pending",
            col(WebhookDelivery.next_attempt_at) <= now,
            (col(WebhookDelivery.claimed_until).is_(None)) | (col(WebhookDelivery.claimed_until) <= now),
            (col(WebhookDelivery.dispatched_at).is_(None))
            | (col(WebhookDelivery.dispatched_at) <= now - settings.webhook_redispatch_after_s),
        )
        .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
        .limit(settings.beat_chunk_size)
        .with_for_update(skip_locked=True)
    )
    if after is not None:
        due = due.where(
            tuple_(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id)) > tuple_(*after)
        )
    rows = session.execute(due).all()
    if not rows:
        return [], None
    session.execute(
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id).in_([row.id for row in rows]))
        .values(dispatched_at=now)
        .execution_options(synchronize_session=False)
    )
    return [deliver_follow_up(row.id) for row in rows], (rows[-1].next_attempt_at, rows[-1].id)
