"""Webhook endpoints: create, update (url, events, enable/disable), delete; resend an event.

README: Webhooks. The URL's host is resolved when an endpoint is written (and again at every
delivery, ``worker.webhooks.post``): one that resolves to a loopback, link-local, private,
multicast or reserved address is refused unless ``webhooks_allow_private`` is set.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlmodel import col

from domain.errors import BadRequest, NotFound
from tasks.contracts import WebhookEndpointCreate, WebhookEndpointDelete, WebhookEndpointUpdate, WebhookResend
from tasks.event_types import receives
from worker.services.base import Outcome, Request
from worker.settings import get_settings
from worker.tables import WebhookDelivery, WebhookEndpoint
from worker.webhooks import checked_addresses, create_deliveries, receiving_endpoints

log = logging.getLogger("billing.webhooks")


def _check_url(url: str) -> None:
    checked_addresses(url, allow_private=get_settings().webhooks_allow_private)


def _endpoint(request: Request, endpoint_id: str) -> WebhookEndpoint:
    row = request.session.get(WebhookEndpoint, endpoint_id)
    if row is None or row.deleted:
        raise NotFound("webhook_endpoint", endpoint_id, field="webhook_endpoint", deleted=row is not None)
    return row


def create(request: Request, command: WebhookEndpointCreate) -> Outcome:
    if prior := request.replayed():
        return prior
    request.ensure_new(WebhookEndpoint, command.id, resource="webhook endpoint")
    _check_url(command.url)
    request.session.add(
        WebhookEndpoint(
            id=command.id,
            url=command.url,
            enabled_events=list(command.enabled_events),
            secret=command.secret,
            description=command.description,
            metadata_=command.metadata,
            created=request.now,
        )
    )
    log.info("webhook endpoint %s created for %s", command.id, command.url)
    return request.done(command.id)


def update(request: Request, command: WebhookEndpointUpdate) -> Outcome:
    if prior := request.replayed():
        return prior
    endpoint = _endpoint(request, command.webhook_endpoint)
    if command.url is not None:
        _check_url(command.url)
        endpoint.url = command.url
    if command.enabled_events is not None:
        endpoint.enabled_events = list(command.enabled_events)
    if command.description is not None:
        endpoint.description = command.description
    if command.metadata is not None:
        endpoint.metadata_ = command.metadata
    if command.disabled is not None:
        endpoint.status = "disabled" if command.disabled else "enabled"
        endpoint.disabled_reason = None
        endpoint.failing_since = None
    request.session.add(endpoint)
    return request.done(endpoint.id)


def delete(request: Request, command: WebhookEndpointDelete) -> Outcome:
    """Stops every delivery to it (pending ones are canceled when next picked up); its
    attempts stay readable (``billing webhooks attempts we_…``)."""
    if prior := request.replayed():
        return prior
    endpoint = _endpoint(request, command.webhook_endpoint)
    endpoint.deleted = True
    endpoint.status = "disabled"
    request.session.add(endpoint)
    return request.done(endpoint.id)


def resend(request: Request, command: WebhookResend) -> Outcome:
    """Deliver an event again, as a new delivery: to the endpoint named (enabled or not, as long
    as it is not deleted), or to every enabled endpoint that receives the event's type."""
    if prior := request.replayed():
        return prior
    event_type = _event_type(request, command.event)
    if command.webhook_endpoint is not None:
        targets = [_endpoint(request, command.webhook_endpoint).id]
    else:
        targets = [
            e.id for e in receiving_endpoints(request.session) if receives(e.enabled_events, event_type)
        ]
        if not targets:
            raise BadRequest(f"no enabled endpoint receives {event_type} events", field="event")
    earlier = request.session.execute(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(col(WebhookDelivery.event_id) == command.event)
    ).scalar_one()
    follow_ups = create_deliveries(
        request.session,
        [(command.event, target) for target in targets],
        request.now,
        generation=f":resend{earlier}:{request.key}",
    )
    return request.done(command.event, follow_ups=follow_ups)


def _event_type(request: Request, event_id: str) -> str:
    from worker.tables import Event

    event = request.session.get(Event, event_id)
    if event is None:
        raise NotFound("event", event_id, field="event")
    return event.type
