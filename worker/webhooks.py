"""Webhooks on the worker's side: fan-out of events to endpoints, and the guarded HTTP sender.

``fan_out`` runs in the transaction that writes the events (``worker.services.base``): one
``webhook_deliveries`` row per event and endpoint that receives its type, and one outbox
follow-up per delivery, so a delivery exists exactly when its event does and is published
after the commit (the reconciler publishes it again if that publication is lost; the
``billing.webhooks.dispatch`` sweep publishes the retries). README: Webhooks.

``post`` sends one request: the host is resolved here and every address it resolves to is
checked (``domain.webhooks.refused_address``) at every delivery, not only when the endpoint
was written, so a name re-pointed at an internal address later (DNS rebinding) is refused;
the connection goes to the address that was checked. No redirect is followed (a 3xx is a
failed try), the response body read is bounded, the whole request is bounded by a timeout.
Nothing here logs a secret or a signature.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select
from sqlmodel import Session, col

from domain.errors import BadRequest, DestinationRefused
from domain.webhooks import refused_address
from tasks.event_types import receives
from tasks.ids import PREFIXES, derived_id
from worker.db import table_of
from worker.tables import WebhookDelivery, WebhookEndpoint

if TYPE_CHECKING:
    from worker.services.base import FollowUp  # which calls fan_out: imported when first needed

DELIVER_TASK = "billing.webhooks.deliver"
MAX_RESPONSE_BYTES = 64 * 1024
"""Read at most this much of a receiver's answer (the rest is never read)."""
EXCERPT_CHARS = 500
"""Kept of a response body with its attempt."""
USER_AGENT = "billing-worker-webhooks/1"

_DELIVERIES = table_of(WebhookDelivery)


def delivery_key(delivery_id: str) -> str:
    """The outbox key of a delivery's first publication (closed when it is first claimed)."""
    return f"deliver:{delivery_id}"


def deliver_follow_up(delivery_id: str) -> FollowUp:
    from worker.services.base import FollowUp

    key = delivery_key(delivery_id)
    return FollowUp(DELIVER_TASK, {"delivery": delivery_id, "idempotency_key": key}, key)


def receiving_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(
        session.execute(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.status) == "enabled", col(WebhookEndpoint.deleted).is_(False)
            )
        ).scalars()
    )


def create_deliveries(
    session: Session,
    pairs: Sequence[tuple[str, str]],
    now: int,
    *,
    generation: str = "",
    published: bool = True,
) -> list[FollowUp]:
    """One pending delivery per (event id, endpoint id), published at once (the outbox), or, with
    ``published=False``, by the dispatch sweep's next tick.

    Ids are derived from the pair (and ``generation`` for a resend), so a transaction that
    runs again makes the same ones."""
    rows: list[dict[str, Any]] = [
        {
            "id": derived_id(PREFIXES["webhook_delivery"], f"{event_id}:{endpoint_id}{generation}"),
            "event_id": event_id,
            "endpoint_id": endpoint_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "dispatched_at": now if published else None,
            "created": now,
        }
        for event_id, endpoint_id in pairs
    ]
    if not rows:
        return []
    session.execute(insert(_DELIVERIES), rows)
    return [deliver_follow_up(row["id"]) for row in rows]


def fan_out(session: Session, events: Sequence[Any], now: int, *, published: bool = True) -> list[FollowUp]:
    """Deliveries of ``events`` (rows with ``id`` and ``type``) to every enabled endpoint that
    receives their type, in the caller's transaction; the follow-ups go to the outbox.

    ``published=False``, for events written outside a request (beat jobs, dead letters), whose
    callers have no outbox to publish from: the dispatch sweep publishes the deliveries at its
    next tick (``BILLING_WEBHOOK_DISPATCH_INTERVAL_S``); nothing is returned."""
    if not events:
        return []
    endpoints = receiving_endpoints(session)
    if not endpoints:
        return []
    pairs = [
        (event.id, endpoint.id)
        for event in events
        for endpoint in endpoints
        if receives(endpoint.enabled_events, event.type)
    ]
    follow_ups = create_deliveries(session, pairs, now, published=published)
    return follow_ups if published else []


# -- the guarded sender ---------------------------------------------------------------------------


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadRequest(f"host {host!r} does not resolve ({exc})", field="url") from None
    addresses = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def checked_addresses(url: str, *, allow_private: bool) -> tuple[Any, list[str]]:
    """The URL's parts and the addresses it may be reached at; ``DestinationRefused`` when any
    address its host resolves to is refused (all must pass: a resolver may answer with a
    public and an internal address and let the client pick)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(parts.hostname or "", port)
    if not allow_private:
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                raise DestinationRefused(
                    f"host {parts.hostname!r} resolves to {address}, a {reason} address: webhooks are"
                    " not sent there (BILLING_WEBHOOKS_ALLOW_PRIVATE allows it, for development)",
                    field="url",
                )
    return parts, addresses


@dataclass(frozen=True, slots=True)
class Sent:
    """How one request went: ``status`` (None when no answer came) and ``error`` (None on 2xx)."""

    status: int | None
    error: str | None
    duration_ms: int
    excerpt: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to the address that was checked, whatever the name resolves to now."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]  # http.client's own context, not in the stubs


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> Sent:
    """POST ``body`` to ``url``: one try, never raises for what the network or the receiver does."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        parts, addresses = checked_addresses(url, allow_private=allow_private)
    except BadRequest as exc:
        return Sent(None, exc.message, took())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = kind(parts.hostname or "", port, addresses[0], timeout)
    deadline = started + timeout
    try:
        connection.request(
            "POST",
            target,
            body=body,
            headers={
                **headers,
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": USER_AGENT,
                "Connection": "close",
            },
        )
        _bound(connection, deadline)
        response = connection.getresponse()
        chunks, size = [], 0
        while size < MAX_RESPONSE_BYTES:
            _bound(connection, deadline)
            chunk = response.read1(MAX_RESPONSE_BYTES - size)  # what has arrived, never more than asked
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        text = b"".join(chunks)[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS]
        status = response.status
    except TimeoutError:
        return Sent(None, f"timed out after {timeout:g} s", took())
    except (OSError, http.client.HTTPException) as exc:
        return Sent(None, f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS], took())
    finally:
        connection.close()
    if 200 <= status < 300:
        return Sent(status, None, took(), text or None)
    what = "a redirect (not followed)" if 300 <= status < 400 else "not 2xx"
    return Sent(status, f"HTTP {status}: {what}", took(), text or None)


def _bound(connection: http.client.HTTPConnection, deadline: float) -> None:
    """What is left of the whole request's time, as the socket's timeout for its next read."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if connection.sock is not None:
        connection.sock.settimeout(left)
