"""``billing``: the operator's command line (reads, migrations, the demo)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from domain.errors import BillingError


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group()
def main() -> None:
    """Multi-currency billing on Celery workers. Settings: BILLING_DATABASE_URL, BILLING_BROKER_URL."""


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION (default: head)."""
    from worker.migrate import upgrade

    upgrade(revision=revision)
    click.echo(f"database at {revision}")


@main.command("get")
@click.argument("object_id")
@click.option("--expand", multiple=True, help="e.g. invoice_credit_balance (customers)")
def get(object_id: str, expand: tuple[str, ...]) -> None:
    """Print one object (customer, invoice, item, credit note, ...) as JSON."""
    from worker.db import read_session
    from worker.views import get_object

    with read_session() as session:
        _print_json(get_object(session, object_id, expand=expand))


@main.command("list")
@click.argument(
    "resource",
    type=click.Choice(
        [
            "customers",
            "invoices",
            "invoice_items",
            "credit_notes",
            "balance_transactions",
            "coupons",
            "tax_rates",
            "task_failures",
        ]
    ),
)
@click.option("--customer")
@click.option("--pending", is_flag=True, default=None, help="invoice_items: only those not on an invoice")
@click.option("--currency")
@click.option("--status")
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
@click.option("--starting-after")
def list_(resource: str, **filters: Any) -> None:
    """List objects as JSON (Stripe's list shape)."""
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


@main.command()
def audit() -> None:
    """Check the books (ledger, balances, invoice totals, credit notes); exit 1 on any violation.

    Prints "audit: N checks, 0 violations", or each violation as one JSON line.
    """
    from worker.audit import CHECKS, audit_database

    violations = audit_database()
    if not violations:
        click.echo(f"audit: {len(CHECKS)} checks, 0 violations")
        return
    for violation in violations:
        click.echo(violation.as_json())
    click.echo(f"audit: {len(CHECKS)} checks, {len(violations)} violations", err=True)
    sys.exit(1)


@main.command()
def demo() -> None:
    """Run a demo billing run through the client, broker and an in-process worker."""
    from worker.demo import run_demo

    run_demo()


def run() -> None:
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
