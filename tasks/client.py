"""The producer client: how other services enqueue billing work.

    from tasks.client import BillingClient

    billing = BillingClient(broker_url="redis://localhost:6379/0")
    customer = billing.create_customer(email="ada@example.com", name="Ada", metadata={"user_id": "42"})
    billing.create_invoice_items([{"customer": customer, "currency": "cad", "amount": 1500}, ...])
    invoice = billing.create_invoice(customer=customer, currency="cad", finalize=True)

Every method validates its parameters (Stripe's names) before anything is sent, sends
one task by name with a JSON body and returns at once a ``Sent``: the id of the object the
task will create (ids are made here, so a redelivered message can never create a twin), or
for an action the id of the object it acts on, as a ``str`` that also carries the request's
idempotency key. Pass ``idempotency_key`` to make a retried call safe: the same key always
yields the same id, and the worker refuses the same key with other parameters.

What became of a request, without the database (``tasks.fates``)::

    invoice = billing.create_invoice(customer=customer, currency="cad", finalize=True)
    fate = invoice.wait(timeout=30)      # or billing.fate(invoice), billing.fate("<key>")
    fate.status, fate.ids, fate.error    # "succeeded", every invoice of the chain / the error

Needs only Celery: imports neither the database nor the worker. On Redis it sends with
the project's transport (``tasks.broker``), whose doorbell wakes an idle worker at once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from amqp.exceptions import ChannelError
from celery import Celery

from domain.errors import BadRequest, TransientError
from tasks import contracts
from tasks.broker import transport_for
from tasks.fates import Fate, FateStore, fate_store_for, resolve
from tasks.ids import PREFIXES, derived_id, new_id, new_ids
from tasks.operations import QUEUE_DEFAULT, contract_of, queue_for
from tasks.redaction import kwargsrepr
from tasks.webhooks import new_signing_secret

__all__ = [
    "BillingClient",
    "BrokerNotConfigured",
    "Fate",
    "FatesUnavailable",
    "NewWebhookEndpoint",
    "QueueFull",
    "Sent",
    "SentList",
]

DEPTH_RECHECK_S = 0.5
"""How long a queue's depth is estimated (last count plus what this client sent since) before it
is counted again: one round trip per queue per half second, whatever the sending rate."""


class QueueFull(TransientError):
    """A queue holds ``BILLING_MAX_QUEUE_DEPTH`` messages or more, still after waiting
    ``BILLING_QUEUE_FULL_WAIT_S``: the workers are behind; send again later. Nothing was sent."""


class BrokerNotConfigured(RuntimeError):
    """No broker URL was given and ``BILLING_BROKER_URL`` is not set. The client does not fall
    back to Celery's in-process ``memory://`` broker: a message sent there from a producer's
    process reaches no worker and is lost."""


@dataclass(frozen=True, slots=True)
class NewWebhookEndpoint:
    """What ``create_webhook_endpoint`` returns: the endpoint's id and its signing secret,
    which nothing will show again (keep it where the receiving service reads its settings)."""

    id: str
    secret: str
    sent: Sent = field(compare=False)
    """The request that creates it: ``fate()`` and ``wait()`` as any request's."""

    @property
    def idempotency_key(self) -> str:
        return self.sent.idempotency_key

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"NewWebhookEndpoint(id={self.id!r}, secret='whsec_…')"

    def fate(self) -> Fate:
        return self.sent.fate()

    def wait(self, timeout: float = 30.0) -> Fate:
        return self.sent.wait(timeout)


class FatesUnavailable(RuntimeError):
    """The broker keeps no fates: only Redis (and the embedded default's in-process broker) do."""


WAIT_POLL_S = (0.01, 0.25)
"""``wait`` reads the fate again after 10 ms, then twice as long each time, up to 250 ms."""


class Handle:
    """A request sent (``Sent``, ``SentList``): ``fate()`` now, ``wait(timeout)`` for a final one."""

    _client: BillingClient
    keys: tuple[str, ...]

    def fate(self) -> Fate:
        """What became of the request so far (one read; more for a chain's follow-ups)."""
        return self._client.fate(self)

    def wait(self, timeout: float = 30.0) -> Fate:
        """Block until the request succeeded or failed, at most ``timeout`` seconds; a fate still
        ``pending`` when the time is up is returned as it is (nothing is raised)."""
        return self._client.wait(self, timeout=timeout)


class Sent(Handle, str):
    """A request sent: as a ``str``, what the method returned before handles existed (the id of
    the object it creates or acts on; ``invoice_pending``: the run's key), so ``customer =
    billing.create_customer(...)`` still passes on as an id. Also: ``id``, ``idempotency_key``,
    ``task``, ``keys`` (the request keys its fate is read from), ``fate()`` and ``wait()``."""

    id: str | None
    idempotency_key: str
    task: str

    def __new__(
        cls, value: str, *, id: str | None, idempotency_key: str, task: str, client: BillingClient
    ) -> Sent:
        sent = super().__new__(cls, value)
        sent.id, sent.idempotency_key, sent.task = id, idempotency_key, task
        sent.keys, sent._client = (idempotency_key,), client
        return sent

    def __reduce__(self) -> Any:  # pickled or copied: the plain string
        return (str, (str(self),))


class SentList(Handle, list[str]):
    """The ids of a list call (``create_invoice_items``), with the keys of its messages (one per
    1,000 items): its fate is succeeded once every message is, failed if any failed."""

    idempotency_key: str
    task: str

    def __init__(
        self, ids: list[str], *, idempotency_key: str, keys: Sequence[str], task: str, client: BillingClient
    ) -> None:
        super().__init__(ids)
        self.idempotency_key, self.task, self.keys, self._client = idempotency_key, task, tuple(keys), client


def _env_number(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


class BillingClient:
    def __init__(
        self,
        broker_url: str | None = None,
        *,
        app: Celery | None = None,
        max_queue_depth: int | None = None,
        queue_full_wait_s: float | None = None,
        fates: FateStore | None = None,
    ) -> None:
        """``fates``: where requests' fates are read (default: the broker's Redis, or this
        process's memory for the in-process broker; see ``tasks.fates``).

        ``max_queue_depth`` (default ``BILLING_MAX_QUEUE_DEPTH``; none: no bound) bounds each
        queue: a call that would pass it waits up to ``queue_full_wait_s`` (default
        ``BILLING_QUEUE_FULL_WAIT_S``, else 5 s) for the workers to drain it, then raises
        ``QueueFull`` with nothing sent. README: Reliability."""
        if app is None:
            app = Celery("billing-client", set_as_current=False)
            broker_url = broker_url or os.environ.get("BILLING_BROKER_URL", "").strip()
            if not broker_url:
                raise BrokerNotConfigured(
                    "no broker URL: pass BillingClient(broker_url=...) or set BILLING_BROKER_URL"
                    " (e.g. redis://127.0.0.1:6379/0)"
                )
            app.conf.update(
                broker_url=broker_url,
                broker_transport=transport_for(broker_url),
                task_serializer="json",
                accept_content=["json"],
                task_default_queue=QUEUE_DEFAULT,
                broker_connection_retry_on_startup=True,
            )
        self.app = app
        depth = max_queue_depth if max_queue_depth is not None else _env_number("BILLING_MAX_QUEUE_DEPTH")
        self.max_queue_depth = int(depth) if depth else None
        wait = (
            queue_full_wait_s if queue_full_wait_s is not None else _env_number("BILLING_QUEUE_FULL_WAIT_S")
        )
        self.queue_full_wait_s = 5.0 if wait is None else wait
        self._depths: dict[str, tuple[int, float]] = {}
        self._fates = fates

    # -- fates ------------------------------------------------------------------------------
    @property
    def fates(self) -> FateStore:
        if self._fates is None:
            url = str(self.app.conf.broker_url or "")
            self._fates = fate_store_for(url)
            if self._fates is None:
                raise FatesUnavailable(f"the broker {url.split('://')[0]}:// keeps no fates; use Redis")
        return self._fates

    @staticmethod
    def _keys(request: Handle | str | Sequence[str]) -> tuple[str, ...]:
        if isinstance(request, Handle):
            return request.keys
        if isinstance(request, str):
            return (request,)
        return tuple(request)

    def fate(self, request: Handle | str | Sequence[str]) -> Fate:
        """What became of a request: a handle a method returned, or an idempotency key (a
        create sent without one has its object's id as key). ``pending`` until a worker ends it
        (and every follow-up it asked for: a chain's next invoices), then ``succeeded`` with
        ``ids`` or ``failed`` with ``error``. Fates expire after ``BILLING_FATE_TTL_S`` (24 h):
        an expired or unknown key reads ``pending``."""
        return resolve(self.fates, self._keys(request))

    def wait(self, request: Handle | str | Sequence[str], *, timeout: float = 30.0) -> Fate:
        """``fate``, read again (10 ms, then twice as long each time, at most 250 ms apart) until
        it is no longer pending or ``timeout`` seconds have passed; then returned as it is."""
        keys = self._keys(request)
        deadline = time.monotonic() + timeout
        pause, cap = WAIT_POLL_S
        known: dict[str, Any] = {}
        while True:
            fate = resolve(self.fates, keys, known)
            remaining = deadline - time.monotonic()
            if fate.done or remaining <= 0:
                return fate
            known = fate.records
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, cap)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, task_name: str, params: dict[str, Any]) -> contracts.Contract:
        command = contracts.parse(contract_of(task_name), params)
        queue = queue_for(task_name)
        self._admit(queue)
        payload = contracts.payload_of(command)
        self.app.send_task(task_name, kwargs=payload, queue=queue, kwargsrepr=kwargsrepr(payload))
        return command

    def _admit(self, queue: str, messages: int = 1) -> None:
        """Wait for room for ``messages`` more in ``queue``, or raise ``QueueFull``."""
        limit = self.max_queue_depth
        if limit is None:
            return
        depth, counted_at = self._depths.get(queue, (0, float("-inf")))
        if time.monotonic() - counted_at < DEPTH_RECHECK_S and depth + messages <= limit:
            self._depths[queue] = (depth + messages, counted_at)
            return
        deadline = time.monotonic() + self.queue_full_wait_s
        while True:
            depth, counted_at = self._queue_depth(queue), time.monotonic()
            if depth + messages <= limit:
                self._depths[queue] = (depth + messages, counted_at)
                return
            if counted_at >= deadline:
                raise QueueFull(
                    f"queue {queue} holds {depth} messages (BILLING_MAX_QUEUE_DEPTH={limit}); nothing was"
                    f" sent: the workers are behind, try again later"
                )
            time.sleep(min(0.05, max(deadline - counted_at, 0.0)))

    def _queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not those workers hold)."""
        with self.app.connection_for_write() as connection:
            try:
                channel: Any = connection.default_channel  # kombu's virtual channel (stubs: StdChannel)
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:  # Redis drops an empty queue's key
                return 0

    @staticmethod
    def _identity(kind: str, idempotency_key: str | None) -> tuple[str, str]:
        """(id, key): from the caller's key when given, so a retried call maps to the same id."""
        prefix = PREFIXES[kind]
        if idempotency_key is not None:
            return derived_id(prefix, idempotency_key), idempotency_key
        object_id = new_id(prefix)
        return object_id, object_id

    def _sent(self, value: str, object_id: str | None, command: contracts.Contract, task_name: str) -> Sent:
        key = command.request_key
        return Sent(value, id=object_id, idempotency_key=key, task=task_name, client=self)

    def _create(self, task_name: str, kind: str, idempotency_key: str | None, params: dict[str, Any]) -> Sent:
        object_id, key = self._identity(kind, idempotency_key)
        command = self._send(task_name, {**params, "id": object_id, "idempotency_key": key})
        return self._sent(object_id, object_id, command, task_name)

    def _act(self, task_name: str, idempotency_key: str | None, params: dict[str, Any], target: str) -> Sent:
        """An action on ``params[target]`` (an invoice, a customer...): the handle is that id."""
        key = f"req_{uuid.uuid4().hex}" if idempotency_key is None else idempotency_key
        command = self._send(task_name, {**params, "idempotency_key": key})
        return self._sent(params[target], params[target], command, task_name)

    # -- customers --------------------------------------------------------------------------
    def create_customer(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """email, name, phone, description, metadata, address, shipping, preferred_locales,
        tax_exempt, tax_id_data, currency, invoice_prefix, invoice_settings."""
        return self._create("billing.customers.create", "customer", idempotency_key, params)

    def update_customer(self, customer: str, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        return self._act(
            "billing.customers.update", idempotency_key, {**params, "customer": customer}, "customer"
        )

    def delete_customer(self, customer: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act("billing.customers.delete", idempotency_key, {"customer": customer}, "customer")

    # -- invoice items ----------------------------------------------------------------------
    def create_invoice_item(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """customer, currency, amount | unit_amount (+ quantity), description, discountable,
        period {start, end}, metadata, tax_rates."""
        return self._create("billing.invoice_items.create", "invoice_item", idempotency_key, params)

    def create_invoice_items(
        self, items: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> SentList:
        """Many items in as few messages as possible (1,000 per message, each all-or-nothing).

        The whole list is validated before anything is sent; an error names the item by
        its index in ``items``. Returns the items' ids (a list), with the messages' keys.
        """
        batch_key = f"batch_{uuid.uuid4().hex}" if idempotency_key is None else idempotency_key
        fresh = iter(new_ids(PREFIXES["invoice_item"], len(items))) if idempotency_key is None else None
        commands = []
        for index, item in enumerate(items):
            if fresh is None:
                item_id, key = self._identity("invoice_item", f"{batch_key}:{index}")
            else:
                item_id = key = next(fresh)
            try:
                command = contracts.parse(
                    contracts.InvoiceItemCreate, {**item, "id": item_id, "idempotency_key": key}
                )
            except BadRequest as exc:
                raise BadRequest(
                    exc.message, field=f"items[{index}].{exc.field}" if exc.field else f"items[{index}]"
                ) from None
            commands.append(command)
        prepared = contracts.payloads_of(contracts.InvoiceItemCreate, commands)
        size = contracts.MAX_ITEMS_PER_BATCH
        name = "billing.invoice_items.create_many"
        chunks = [
            {
                "items": prepared[start : start + size],
                "idempotency_key": f"{batch_key}:from{start}" if start else batch_key,
            }
            for start in range(0, max(len(prepared), 1), size)
        ]
        for chunk in chunks:  # the envelope's rules (not empty, key length); its items passed above
            contracts.parse(contracts.InvoiceItemsCreate, {**chunk, "items": chunk["items"][:1]})
        self._admit(queue_for(name), len(chunks))
        for chunk in chunks:
            self.app.send_task(name, kwargs=chunk, queue=queue_for(name))
        return SentList(
            [item["id"] for item in prepared],
            idempotency_key=batch_key,
            keys=[str(chunk["idempotency_key"]) for chunk in chunks],
            task=name,
            client=self,
        )

    # -- invoices ---------------------------------------------------------------------------
    def create_invoice(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """customer, currency, collection_method, days_until_due, due_date,
        pending_invoice_items_behavior, auto_advance, description, footer, metadata,
        default_tax_rates, discounts, finalize. Returns the first invoice of the chain."""
        return self._create("billing.invoices.create", "invoice", idempotency_key, params)

    def invoice_pending(self, customer: str, *, idempotency_key: str | None = None, **options: Any) -> Sent:
        """Invoice everything pending for ``customer``: one chain per currency. Returns the run's key
        (``id`` None); the first invoice of currency X is ``derived_id('in', f'{key}:{X}')``, and
        the run's fate gathers every invoice of every chain."""
        key = f"run_{uuid.uuid4().hex}" if idempotency_key is None else idempotency_key
        name = "billing.invoices.create_for_pending"
        command = self._send(name, {**options, "customer": customer, "idempotency_key": key})
        return self._sent(key, None, command, name)

    def finalize_invoice(self, invoice: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act("billing.invoices.finalize", idempotency_key, {"invoice": invoice}, "invoice")

    def void_invoice(self, invoice: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act("billing.invoices.void", idempotency_key, {"invoice": invoice}, "invoice")

    def pay_invoice(self, invoice: str, *, idempotency_key: str | None = None) -> Sent:
        """Record payment received outside the billing system (paid out of band)."""
        return self._act(
            "billing.invoices.pay", idempotency_key, {"invoice": invoice, "paid_out_of_band": True}, "invoice"
        )

    def mark_uncollectible(self, invoice: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act(
            "billing.invoices.mark_uncollectible", idempotency_key, {"invoice": invoice}, "invoice"
        )

    def delete_invoice(self, invoice: str, *, idempotency_key: str | None = None) -> Sent:
        """Delete a draft; its items return to pending."""
        return self._act("billing.invoices.delete", idempotency_key, {"invoice": invoice}, "invoice")

    # -- credit notes -----------------------------------------------------------------------
    def create_credit_note(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """invoice, amount | lines, reason, memo, refund_amount, credit_amount, out_of_band_amount."""
        return self._create("billing.credit_notes.create", "credit_note", idempotency_key, params)

    def void_credit_note(self, credit_note: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act(
            "billing.credit_notes.void", idempotency_key, {"credit_note": credit_note}, "credit_note"
        )

    # -- balance, coupons, discounts, tax rates --------------------------------------------
    def create_balance_transaction(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """customer, amount (negative = credit), currency, description, metadata."""
        return self._create(
            "billing.balance_transactions.create", "customer_balance_transaction", idempotency_key, params
        )

    def create_coupon(
        self, *, id: str | None = None, idempotency_key: str | None = None, **params: Any
    ) -> Sent:
        """percent_off | amount_off + currency (+ currency_options), duration, duration_in_months,
        max_redemptions, redeem_by, name, metadata. ``id`` may be chosen (e.g. "SUMMER25")."""
        coupon_id, key = self._identity("coupon", idempotency_key)
        coupon_id = id or coupon_id
        command = self._send("billing.coupons.create", {**params, "id": coupon_id, "idempotency_key": key})
        return self._sent(coupon_id, coupon_id, command, "billing.coupons.create")

    def attach_discount(self, customer: str, coupon: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act(
            "billing.discounts.create", idempotency_key, {"customer": customer, "coupon": coupon}, "customer"
        )

    def remove_discount(self, customer: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act("billing.discounts.delete", idempotency_key, {"customer": customer}, "customer")

    def create_tax_rate(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """display_name, percentage, inclusive, active, country, jurisdiction, description, metadata."""
        return self._create("billing.tax_rates.create", "tax_rate", idempotency_key, params)

    # -- products, prices, subscriptions -------------------------------------------------------
    def create_product(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """name, description, metadata."""
        return self._create("billing.products.create", "product", idempotency_key, params)

    def create_price(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """product, currency, unit_amount, currency_options {currency: {unit_amount}},
        recurring {interval: day|week|month|year, interval_count}, nickname, metadata."""
        return self._create("billing.prices.create", "price", idempotency_key, params)

    def create_subscription(self, *, idempotency_key: str | None = None, **params: Any) -> Sent:
        """customer, items [{price, quantity}], currency, billing_cycle_anchor, collection_method,
        days_until_due, coupon, auto_advance, cancel_at_period_end, metadata. The first period
        is invoiced at once (``subscription_create``)."""
        return self._create("billing.subscriptions.create", "subscription", idempotency_key, params)

    def cancel_subscription(
        self, subscription: str, *, at_period_end: bool = False, idempotency_key: str | None = None
    ) -> Sent:
        return self._act(
            "billing.subscriptions.cancel",
            idempotency_key,
            {"subscription": subscription, "at_period_end": at_period_end},
            "subscription",
        )

    def change_subscription_currency(
        self, customer: str, currency: str, *, idempotency_key: str | None = None
    ) -> Sent:
        """Move all of the customer's active subscriptions to ``currency`` at the next period boundary."""
        return self._act(
            "billing.subscriptions.change_currency",
            idempotency_key,
            {"customer": customer, "currency": currency},
            "customer",
        )

    # -- webhook endpoints (README: Webhooks) ----------------------------------------------------
    def create_webhook_endpoint(
        self,
        *,
        url: str,
        enabled_events: list[str],
        secret: str | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> NewWebhookEndpoint:
        """url, enabled_events (Stripe's event types, or ["*"]), description, metadata.

        Returns the id and the signing secret (``whsec_…``), made here: the only time it is
        shown. To retry the call safely with an ``idempotency_key``, make the secret first
        (``tasks.webhooks.new_signing_secret()``) and pass the same one each time: a retry with
        another secret is refused as an idempotency conflict. Where the URL resolves is checked
        by the worker (private addresses are refused: README: Webhooks)."""
        endpoint_id, key = self._identity("webhook_endpoint", idempotency_key)
        secret = secret or new_signing_secret()
        task_name = "billing.webhook_endpoints.create"
        command = self._send(
            task_name,
            {**params, "url": url, "enabled_events": enabled_events, "secret": secret, "id": endpoint_id,
             "idempotency_key": key},
        )  # fmt: skip
        return NewWebhookEndpoint(
            endpoint_id, secret, self._sent(endpoint_id, endpoint_id, command, task_name)
        )

    def update_webhook_endpoint(
        self, webhook_endpoint: str, *, idempotency_key: str | None = None, **params: Any
    ) -> Sent:
        """url, enabled_events, disabled (True/False), description, metadata."""
        return self._act(
            "billing.webhook_endpoints.update",
            idempotency_key,
            {**params, "webhook_endpoint": webhook_endpoint},
            "webhook_endpoint",
        )

    def delete_webhook_endpoint(self, webhook_endpoint: str, *, idempotency_key: str | None = None) -> Sent:
        return self._act(
            "billing.webhook_endpoints.delete",
            idempotency_key,
            {"webhook_endpoint": webhook_endpoint},
            "webhook_endpoint",
        )

    def resend_event(
        self, event: str, *, webhook_endpoint: str | None = None, idempotency_key: str | None = None
    ) -> Sent:
        """Deliver an event again: to one endpoint, or to every enabled endpoint receiving its type."""
        params: dict[str, Any] = {"event": event}
        if webhook_endpoint is not None:
            params["webhook_endpoint"] = webhook_endpoint
        return self._act("billing.webhook_endpoints.resend", idempotency_key, params, "event")

    # -- test clocks ------------------------------------------------------------------------
    def create_test_clock(
        self, *, frozen_time: int, idempotency_key: str | None = None, **params: Any
    ) -> Sent:
        """frozen_time, name. Customers created with ``test_clock`` live at its time."""
        return self._create(
            "billing.test_clocks.create",
            "test_clock",
            idempotency_key,
            {**params, "frozen_time": frozen_time},
        )

    def advance_test_clock(
        self, test_clock: str, frozen_time: int, *, idempotency_key: str | None = None
    ) -> Sent:
        """Bill everything due on the clock's customers up to ``frozen_time``, in time order."""
        return self._act(
            "billing.test_clocks.advance",
            idempotency_key,
            {"test_clock": test_clock, "frozen_time": frozen_time},
            "test_clock",
        )
