"""``billing``: the operator's command line (reads, migrations, the demo)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import time
from typing import Any

import click

from domain.errors import BillingError

WORKER_DEPENDENCIES = (
    "sqlmodel", "sqlalchemy", "alembic", "psycopg", "celery_batches", "pydantic_settings", "jinja2", "babel",
)  # fmt: skip
"""Installed by the ``worker`` extra; a producer's install has none of them."""


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group()
@click.version_option(package_name="billing-worker", prog_name="billing")
def main() -> None:
    """Multi-currency billing on Celery workers. Settings: BILLING_DATABASE_URL, BILLING_BROKER_URL."""


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION (default: head); PostgreSQL: create the database
    first when it does not exist and the role may (CREATEDB)."""
    from worker.migrate import upgrade

    if _ensure_database():
        click.echo("database created")
    upgrade(revision=revision)
    click.echo(f"database at {revision}")


def _ensure_database() -> bool:
    from worker.migrate import DatabaseMissing, ensure_database

    try:
        return ensure_database()
    except DatabaseMissing as exc:
        raise click.ClickException(str(exc)) from None


@main.command("get")
@click.argument("object_id")
@click.option("--expand", multiple=True, help="e.g. invoice_credit_balance (customers)")
def get(object_id: str, expand: tuple[str, ...]) -> None:
    """Print one object (customer, invoice, item, credit note, event, ...) as JSON."""
    from worker.db import read_session
    from worker.views import get_object

    with read_session() as session:
        _print_json(get_object(session, object_id, expand=expand))


@main.command("preview")
@click.option("--customer", required=True, help="cus_…")
@click.option("--currency", help="default: the customer's (a renewal: the subscription's)")
@click.option("--subscription", help="sub_…: its next renewal instead of an invoice of pending items")
def preview(customer: str, currency: str | None, subscription: str | None) -> None:
    """Print the invoice that creating one now (or the subscription's next renewal) would make:
    its lines (the oldest pending items, at most 250; ``chain`` counts those left for the next
    invoices), discounts, tax, the credit that would apply and the amount due. Writes nothing."""
    from worker.db import read_session
    from worker.services.invoices import preview as invoice_preview

    with read_session() as session:
        _print_json(invoice_preview(customer, currency=currency, subscription=subscription, session=session))


@main.command("pdf")
@click.argument("object_id", metavar="IN_OR_CN_ID")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="file to write; default: stdout"
)
def pdf(object_id: str, output: str | None) -> None:
    """Write the stored PDF of an invoice (in_…) or a credit note (cn_…), as the document task
    made it. Not there yet: exit 2 (the task runs on queue billing.documents)."""
    from domain.errors import NotFound
    from worker.db import read_session
    from worker.documents.model import KINDS, kind_of
    from worker.documents.store import DatabaseStore

    kind_of(object_id)
    with read_session() as session:
        document = DatabaseStore(session).get(object_id)
    if document is None:
        raise NotFound(
            f"document ({' or '.join(KINDS)}; not rendered yet, or the object does not exist)",
            object_id,
            field="id",
        )
    if output is None:
        sys.stdout.buffer.write(document.content)
        return
    with open(output, "wb") as file:
        file.write(document.content)
    click.echo(
        f"{output}: {document.size} bytes, {document.locale}, sha256 {document.content_hash}", err=True
    )


@main.command("html")
@click.argument("object_id", metavar="IN_OR_CN_ID")
@click.option("--locale", help="render in this supported locale instead of the customer's")
def html(object_id: str, locale: str | None) -> None:
    """Print the HTML of an invoice's (in_…) or credit note's (cn_…) document, rendered now
    from the database (the PDF's source, standalone: styles inline)."""
    from domain.errors import BadRequest
    from worker.db import read_session
    from worker.documents.i18n import SUPPORTED_LOCALES
    from worker.documents.model import load, view
    from worker.documents.render import render_html
    from worker.settings import get_settings

    if locale is not None and locale not in SUPPORTED_LOCALES:
        raise BadRequest(f"must be one of {', '.join(SUPPORTED_LOCALES)} (got {locale!r})", field="locale")
    with read_session() as session:
        source = load(session, object_id)
    click.echo(render_html(view(source, get_settings().issuer, locale)))


@main.command("list")
@click.argument(
    "resource",
    type=click.Choice(
        [
            "customers",
            "invoices",
            "invoice_items",
            "lines",
            "credit_notes",
            "balance_transactions",
            "coupons",
            "tax_rates",
            "task_failures",
            "products",
            "prices",
            "subscriptions",
            "test_clocks",
            "events",
            "webhook_endpoints",
        ]
    ),
)
@click.option("--customer")
@click.option("--pending", is_flag=True, default=None, help="invoice_items: only those not on an invoice")
@click.option("--currency")
@click.option("--status")
@click.option("--overdue", is_flag=True, default=None, help="invoices: open ones past due (marked by beat)")
@click.option("--subscription", help="invoices: those of one subscription")
@click.option("--invoice", help="invoice_items, credit_notes: those of one invoice; lines: required")
@click.option("--type", help="events: of this type, or a group (invoice.*)")
@click.option("--created-gte", callback=lambda _c, _p, v: _time_bound(v), help="events: from (Unix s or ISO)")
@click.option("--created-lte", callback=lambda _c, _p, v: _time_bound(v), help="events: to (Unix s or ISO)")
@click.option("--limit", type=click.IntRange(1, 100), default=100, show_default=True)
@click.option("--starting-after", help="the last id seen: the next (older) page")
@click.option("--ending-before", help="the first id seen: the previous (newer) page")
def list_(resource: str, **filters: Any) -> None:
    """List objects as JSON, newest first (Stripe's list shape and order); an invoice's
    lines oldest first, in claim order, as the invoice shows its first ten."""
    from worker.db import read_session
    from worker.views import list_objects

    with read_session() as session:
        _print_json(list_objects(session, resource, **filters))


@main.command("find-customers")
@click.option("--email", help="exact email")
@click.option("--metadata", "pairs", multiple=True, metavar="KEY=VALUE", help="metadata match; repeatable")
def find_customers(email: str | None, pairs: tuple[str, ...]) -> None:
    """Find customers by exact email and/or metadata, as callers do before creating one."""
    from worker.db import read_session
    from worker.views import find_customers as find

    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    with read_session() as session:
        _print_json({"object": "list", "data": find(session, email=email, metadata=metadata or None)})


@main.command("fate")
@click.argument("keys", nargs=-1, required=True)
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=0.0, help="seconds to wait for the end")
@click.option(
    "--database",
    "from_database",
    is_flag=True,
    help="read the database instead of the broker's Redis (the default with the in-process broker)",
)
def fate(keys: tuple[str, ...], wait_s: float, from_database: bool) -> None:
    """Print what became of a request: pending, succeeded (the ids it made, with every invoice of
    a chain) or failed (the error), by its idempotency key (several: a list call's messages).

    Reads the fates workers keep on the broker's Redis (``BILLING_FATE_TTL_S``); with the
    in-process broker of the embedded default, or ``--database``, reads the database."""
    from tasks.fates import fate_store_for
    from tasks.fates import resolve as resolve_fate
    from worker.db import read_session
    from worker.fates import DatabaseFates
    from worker.settings import get_settings

    deadline = time.monotonic() + wait_s
    store = None if from_database else fate_store_for(get_settings().broker_url)
    while True:
        if store is None or get_settings().broker_url.startswith("memory"):
            with read_session() as session:
                result = resolve_fate(DatabaseFates(session), keys)
        else:
            result = resolve_fate(store, keys)
        if result.done or time.monotonic() >= deadline:
            _print_json(result.as_dict())
            return
        time.sleep(0.25)


@main.command()
def audit() -> None:
    """Check the books (ledger, balances, invoice totals, credit notes) and the events against
    them (every effect has its event and every event its effect); exit 1 on any violation.

    Prints "audit: N checks, 0 violations", or each violation as one JSON line.
    """
    from worker.audit import CHECKS, EVENT_CHECKS, audit_database

    checks = len(CHECKS) + len(EVENT_CHECKS)
    violations = audit_database()
    if not violations:
        click.echo(f"audit: {checks} checks, 0 violations")
        return
    for violation in violations:
        click.echo(violation.as_json())
    click.echo(f"audit: {checks} checks, {len(violations)} violations", err=True)
    sys.exit(1)


@main.group()
def failures() -> None:
    """Dead letters: tasks that could not succeed (also: billing list task_failures)."""


def _failure_filters(func: Any) -> Any:
    """The options that choose failures, shared by ``list`` and ``retry``."""
    options = [
        click.option("--task", help="task name, e.g. billing.invoices.create"),
        click.option("--code", help="error code, e.g. resource_missing, message_parked"),
        click.option("--customer", help="the payload's customer"),
        click.option("--since", help="failed last at or after: Unix seconds or ISO 8601"),
        click.option("--parked/--not-parked", default=None, help="parked after too many redeliveries"),
        click.option("--status", type=click.Choice(["open", "retried", "resolved"])),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter(since: str | None, **criteria: Any) -> Any:
    from worker.dead_letters import FailureFilter

    return FailureFilter(since=_timestamp(since) if since else None, **criteria)


def _operator() -> str:
    import getpass
    import socket

    return f"{getpass.getuser()}@{socket.gethostname()}"


@failures.command("list")
@_failure_filters
@click.option("--limit", type=click.IntRange(1, 100), default=100)
@click.option("--starting-after", help="the last task id seen")
def failures_list(limit: int, starting_after: str | None, **criteria: Any) -> None:
    """List failures with their status (open, retried, resolved), newest first, as JSON."""
    from worker.db import read_session
    from worker.dead_letters import list_failures

    with read_session() as session:
        _print_json(list_failures(session, _filter(**criteria), limit=limit, starting_after=starting_after))


@failures.command("show")
@click.argument("task_id")
def failures_show(task_id: str) -> None:
    """One failure with its payload, error, status and history (retries, resolutions, reopenings)."""
    from worker.db import read_session
    from worker.dead_letters import show_failure

    with read_session() as session:
        _print_json(show_failure(session, task_id))


@failures.command("retry")
@click.argument("task_ids", nargs=-1)
@_failure_filters
@click.option("--actor", default=_operator, show_default="user@host", help="who, for the audit trail")
def failures_retry(task_ids: tuple[str, ...], actor: str, **criteria: Any) -> None:
    """Send failures again, with their payload and task id, once the cause is fixed: the TASK_IDS
    given, or those the filters choose (open ones unless --status says otherwise).

    Safe to repeat: every billing task is idempotent. Each becomes "retried"; one that fails
    again is open again (attempts + 1). An unknown id or a payload that cannot be replayed
    refuses the whole retry (exit 2)."""
    from tasks.client import BillingClient
    from tasks.operations import queue_for
    from worker.dead_letters import retry_failures
    from worker.settings import get_settings
    from worker.tables import TaskFailure

    broker_url = get_settings().broker_url
    if broker_url.startswith("memory://"):
        raise click.UsageError(
            "retrying sends the failures to the workers' broker: set BILLING_BROKER_URL (the embedded"
            " in-process broker lives only inside a running process)"
        )
    client = BillingClient(broker_url=broker_url)

    def send(row: TaskFailure) -> None:
        client.app.send_task(
            row.task_name, kwargs=row.payload, queue=queue_for(row.task_name), task_id=row.task_id
        )

    _print_json(retry_failures(task_ids, _filter(**criteria), actor=actor, send=send))


@failures.command("resolve")
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--note", required=True, help="why it needs nothing more (kept in its history)")
@click.option("--actor", default=_operator, show_default="user@host", help="who, for the audit trail")
def failures_resolve(task_ids: tuple[str, ...], note: str, actor: str) -> None:
    """Close failures that need nothing more (fixed by hand, or not to be done). An unknown id
    refuses them all (exit 2)."""
    from worker.dead_letters import resolve_failures

    _print_json(resolve_failures(task_ids, note=note, actor=actor))


@main.command()
@click.option("--minutes", type=float, default=2.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True)
def soak(minutes: float, seed: int, workers: int) -> None:
    """Random operations and faults on PostgreSQL + Redis for N minutes, then the audit."""
    from worker.devtools.soak import run_soak

    sys.exit(run_soak(minutes, seed, workers, click.echo))


def _time_bound(value: str | None) -> int | None:
    return None if value is None else _timestamp(value)


def _timestamp(value: str) -> int:
    """Unix seconds, or an ISO 8601 time (UTC unless it names its offset)."""
    from datetime import UTC, datetime

    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither Unix seconds nor ISO 8601") from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


@main.group()
def clock() -> None:
    """Test clocks: customers created with ``test_clock`` live at the clock's time.

    These commands run the operation in this process, on BILLING_DATABASE_URL, with the
    same services a worker runs (and run what it asks for next, such as chained invoices).
    """


def _run_here(operation: str, payload: dict[str, Any]) -> None:
    from worker.services.registry import run as run_operation

    queue = list(run_operation(operation, payload).follow_ups)
    while queue:
        follow_up = queue.pop(0)
        queue.extend(run_operation(follow_up.task_name, dict(follow_up.payload)).follow_ups)


@clock.command("create")
@click.option("--frozen-time", required=True, help="Unix seconds or ISO 8601, e.g. 2026-01-31T10:00:00")
@click.option("--name")
def clock_create(frozen_time: str, name: str | None) -> None:
    """Create a test clock; prints its id (pass it as ``test_clock`` when creating customers)."""
    from tasks.ids import new_id

    clock_id = new_id("clock")
    payload: dict[str, Any] = {
        "id": clock_id,
        "frozen_time": _timestamp(frozen_time),
        "idempotency_key": clock_id,
    }
    if name:
        payload["name"] = name
    _run_here("billing.test_clocks.create", payload)
    click.echo(clock_id)


@clock.command("advance")
@click.argument("clock_id")
@click.option("--months", type=click.IntRange(0, 120), default=0)
@click.option("--days", type=click.IntRange(0, 3660), default=0)
@click.option("--hours", type=click.IntRange(0, 87_840), default=0)
@click.option("--to", "to", help="Unix seconds or ISO 8601 (instead of --months/--days/--hours)")
def clock_advance(clock_id: str, months: int, days: int, hours: int, to: str | None) -> None:
    """Move CLOCK_ID forward: every period boundary in between is billed, drafts are finalized an
    hour after they were made, overdue invoices are marked. Prints the invoices that appeared."""
    from sqlalchemy import select
    from sqlmodel import col

    from domain.periods import add_months
    from worker.db import read_session
    from worker.tables import Customer, Invoice, SandboxClock
    from worker.views import get_object

    with read_session() as session:
        row = session.get(SandboxClock, clock_id)
        if row is None:
            raise click.BadParameter(f"no such test clock: {clock_id!r}", param_hint="CLOCK_ID")
        before = row.frozen_time
    target = _timestamp(to) if to else add_months(before, months) + days * 86_400 + hours * 3600
    payload = {"test_clock": clock_id, "frozen_time": target, "idempotency_key": f"cli:{clock_id}:{target}"}
    _run_here("billing.test_clocks.advance", payload)
    with read_session() as session:
        ids = list(
            session.execute(
                select(col(Invoice.id))
                .join(Customer, col(Customer.id) == col(Invoice.customer_id))
                .where(col(Customer.test_clock_id) == clock_id, col(Invoice.created) > before)
                .order_by(col(Invoice.created), col(Invoice.id))
            ).scalars()
        )
        invoices = [get_object(session, i, now=target) for i in ids]
    fields = (
        "id",
        "customer",
        "number",
        "billing_reason",
        "currency",
        "total",
        "amount_due",
        "status",
        "created",
    )
    _print_json(
        {
            "test_clock": clock_id,
            "frozen_time": target,
            "invoices": [{name: invoice[name] for name in fields} for invoice in invoices],
        }
    )


@main.group()
def webhooks() -> None:
    """Webhook endpoints: where events are POSTed, signed (README: Webhooks).

    These commands write on BILLING_DATABASE_URL with the same services a worker runs."""


def _endpoint_payload(events: tuple[str, ...], description: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if events:
        payload["enabled_events"] = [name for value in events for name in value.split(",") if name]
    if description is not None:
        payload["description"] = description
    return payload


@webhooks.command("create")
@click.option("--url", required=True, help="https://… where events are POSTed")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    help="an event type, e.g. invoice.paid, or '*'; repeatable",
)
@click.option("--description")
def webhooks_create(url: str, events: tuple[str, ...], description: str | None) -> None:
    """Create an endpoint; prints it with its signing secret (whsec_…), which is never shown again."""
    from tasks.ids import new_id
    from tasks.webhooks import new_signing_secret
    from worker.db import read_session
    from worker.views import get_object

    endpoint_id, secret = new_id("we"), new_signing_secret()
    payload = {"id": endpoint_id, "url": url, "secret": secret, "idempotency_key": endpoint_id}
    _run_here("billing.webhook_endpoints.create", {**payload, **_endpoint_payload(events, description)})
    with read_session() as session:
        _print_json({**get_object(session, endpoint_id), "secret": secret})


@webhooks.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=100, show_default=True)
@click.option("--starting-after", help="the last id seen: the next (older) page")
def webhooks_list(limit: int, starting_after: str | None) -> None:
    """List endpoints, newest first (never their secrets)."""
    from worker.db import read_session
    from worker.views import list_objects

    with read_session() as session:
        _print_json(list_objects(session, "webhook_endpoints", limit=limit, starting_after=starting_after))


@webhooks.command("update")
@click.argument("endpoint_id")
@click.option("--url")
@click.option("--event", "events", multiple=True, help="replaces the endpoint's event types; repeatable")
@click.option("--description")
@click.option("--enable/--disable", "enabled", default=None, help="start or stop sending to it")
def webhooks_update(
    endpoint_id: str, url: str | None, events: tuple[str, ...], description: str | None, enabled: bool | None
) -> None:
    """Change an endpoint's URL, event types or description; enable or disable it."""
    from tasks.ids import new_id
    from worker.db import read_session
    from worker.views import get_object

    payload: dict[str, Any] = {"webhook_endpoint": endpoint_id, "idempotency_key": new_id("req")}
    payload.update(_endpoint_payload(events, description))
    if url is not None:
        payload["url"] = url
    if enabled is not None:
        payload["disabled"] = not enabled
    _run_here("billing.webhook_endpoints.update", payload)
    with read_session() as session:
        _print_json(get_object(session, endpoint_id))


@webhooks.command("delete")
@click.argument("endpoint_id")
def webhooks_delete(endpoint_id: str) -> None:
    """Delete an endpoint: nothing more is sent to it; its attempts stay readable."""
    from tasks.ids import new_id

    _run_here(
        "billing.webhook_endpoints.delete",
        {"webhook_endpoint": endpoint_id, "idempotency_key": new_id("req")},
    )
    _print_json({"id": endpoint_id, "object": "webhook_endpoint", "deleted": True})


@webhooks.command("attempts")
@click.argument("object_id", metavar="we_…|evt_…")
@click.option("--limit", type=click.IntRange(1, 100), default=100, show_default=True)
def webhooks_attempts(object_id: str, limit: int) -> None:
    """Every try of the deliveries to an endpoint or of an event: status, HTTP status, duration, error."""
    from worker.db import read_session
    from worker.views import webhook_attempts

    with read_session() as session:
        _print_json(webhook_attempts(session, object_id, limit=limit))


@main.group()
def events() -> None:
    """Events: what changed, as Stripe's event objects."""


@events.command("resend")
@click.argument("event_id", metavar="evt_…")
@click.option("--endpoint", "endpoint_id", help="we_…: to this endpoint only (default: every enabled one)")
def events_resend(event_id: str, endpoint_id: str | None) -> None:
    """Deliver an event again, as a new delivery. With BILLING_BROKER_URL set the workers send it;
    on the embedded default (no broker to reach) it is sent from this process."""
    from tasks.client import BillingClient
    from tasks.ids import new_id
    from tasks.operations import queue_for
    from worker.outbox import mark_published
    from worker.services.registry import run as run_operation
    from worker.settings import get_settings

    payload: dict[str, Any] = {"event": event_id, "idempotency_key": new_id("req")}
    if endpoint_id:
        payload["webhook_endpoint"] = endpoint_id
    follow_ups = run_operation("billing.webhook_endpoints.resend", payload).follow_ups
    broker_url = get_settings().broker_url
    results: list[Any] = []
    if broker_url.startswith("memory://"):
        from tasks.contracts import WebhookDeliver, parse
        from worker.services.webhooks import deliver

        for follow_up in follow_ups:
            command = parse(WebhookDeliver, dict(follow_up.payload))
            assert isinstance(command, WebhookDeliver)
            results.append(deliver(command))
    else:
        client = BillingClient(broker_url=broker_url)
        for follow_up in follow_ups:
            client.app.send_task(
                follow_up.task_name, kwargs=follow_up.payload, queue=queue_for(follow_up.task_name),
                task_id=follow_up.task_id,
            )  # fmt: skip
            results.append({"delivery": follow_up.payload["delivery"], "queued": True})
        if follow_ups:
            mark_published([follow_up.key for follow_up in follow_ups])
    _print_json({"event": event_id, "deliveries": results})


@main.command()
@click.option("--items", type=click.IntRange(1), default=100_000, show_default=True, help="ingested per run")
@click.option("--single", type=click.IntRange(1), default=5_000, show_default=True, help="messages per run")
@click.option(
    "--naive", type=click.IntRange(1), default=1_000, show_default=True, help="baseline items per run"
)
@click.option("--sizes", default="10000,100000,1000000", show_default=True, help="generation backlogs")
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 16),
    default=None,
    show_default="cores + 1",
    help="worker pool size: one more than the cores, as each process waits on the database part of the time",
)
@click.option("--redis-db", type=click.IntRange(0, 15), default=12, show_default=True, help="flushed first")
@click.option("--database", default="billing_bench", show_default=True, help="PostgreSQL db name")
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["postgres", "sqlite"]),
    multiple=True,
    help="default: both (PostgreSQL + Redis when the settings name them)",
)
@click.option(
    "--stage", "stages", type=click.Choice(["ingestion", "generation"]), multiple=True, help="default: both"
)
@click.option("--smoke", is_flag=True, help="tiny sizes, one run: checks that the benchmark works")
def bench(smoke: bool, backends: tuple[str, ...], sizes: str, stages: tuple[str, ...], **values: Any) -> None:
    """Throughput of ingestion, single-item messages and invoice generation against bare baselines."""
    from worker.devtools.bench import Options, run_bench
    from worker.settings import get_settings

    if not backends:
        settings = get_settings()
        real = settings.database_url.startswith("postgresql") and settings.broker_url.startswith("redis")
        backends = ("postgres", "sqlite") if real else ("sqlite",)
    parsed = tuple(int(s) for s in sizes.split(",") if s.strip())
    values["stages"] = stages or ("ingestion", "generation")
    values = {k: v for k, v in values.items() if v is not None}  # unset: the Options default
    options = (
        Options.smoke(
            **{k: values[k] for k in ("concurrency", "redis_db", "database", "stages") if k in values}
        )
        if smoke
        else (Options(sizes=parsed, **values))
    )
    code, _ = run_bench(options, backends, click.echo)
    sys.exit(code)


@main.command()
def demo() -> None:
    """Run a demo billing run through the client, broker and an in-process worker."""
    from worker.devtools.demo import run_demo

    _ensure_database()
    run_demo()


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9809, show_default=True)
@click.option("--address", default="0.0.0.0", show_default=True)
def exporter(port: int, address: str) -> None:
    """Serve the deployment's gauges for Prometheus on PORT/metrics: queues, unacked, outbox,
    pending items, dead letters, beat jobs, invoices finalized (one exporter per deployment)."""
    import signal

    from worker.exporter import serve
    from worker.logs import mask_secrets
    from worker.settings import get_settings

    settings = get_settings()
    server = serve(settings, port, address)
    click.echo(
        f"billing exporter on {address}:{port}/metrics; broker {mask_secrets(settings.broker_url)},"
        f" database {mask_secrets(settings.database_url)}"
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()
        server.server_close()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(flower_args: tuple[str, ...]) -> None:
    """Flower on the worker app with /metrics behind its authentication; refuses to start without
    authentication (FLOWER_BASIC_AUTH, or FLOWER_AUTH for OAuth). Flower's options follow."""
    if importlib.util.find_spec("flower") is None:
        raise click.ClickException("Flower is not installed: pip install 'billing-worker[monitor]'")
    from worker.flower import NoAuthentication
    from worker.flower import main as flower_main

    try:
        flower_main(flower_args)
    except NoAuthentication as exc:
        raise click.ClickException(str(exc)) from None


@main.command("health")
@click.option(
    "--heartbeat", metavar="FILE", help="fail unless FILE (BILLING_HEARTBEAT_FILE) was touched recently"
)
@click.option("--max-age", type=float, default=120.0, show_default=True, help="seconds, for --heartbeat")
@click.option("--schema", is_flag=True, help="fail unless the database schema is at the migrations' head")
def health(heartbeat: str | None, max_age: float, schema: bool) -> None:
    """Liveness and readiness checks for probes: exit 0 when healthy, 1 with the reason otherwise.

    --heartbeat reads one file's age (no broker round trip); --schema makes one query."""
    problems = []
    if heartbeat:  # a stat, nothing imported: the probe runs every few seconds
        try:
            age = time.time() - os.stat(heartbeat).st_mtime
        except FileNotFoundError:
            problems.append(f"heartbeat {heartbeat}: missing")
        else:
            if age > max_age:
                problems.append(f"heartbeat {heartbeat}: {age:.0f} s old")
    if schema:
        problems.extend(_schema_behind())
    if problems:
        raise click.ClickException("; ".join(problems))
    click.echo("ok")


def _schema_behind() -> list[str]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.db import get_engine
    from worker.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with get_engine().connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return [] if current == heads else [f"schema at {sorted(current) or 'nothing'}, head is {sorted(heads)}"]


def run() -> None:
    missing = [name for name in WORKER_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:  # a producer's install: the client only
        click.echo(
            f"billing: the worker's dependencies are not installed ({', '.join(missing)});"
            " pip install 'billing-worker[worker]'",
            err=True,
        )
        sys.exit(1)
    from worker.logs import configure_cli

    with contextlib.suppress(Exception):  # a bad setting: the command that reads it says which
        configure_cli()
    try:
        main(standalone_mode=False)
    except BillingError as exc:
        click.echo(json.dumps({"error": exc.as_dict()}), err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
