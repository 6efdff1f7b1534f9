"""``billing demo``: one billing run end to end, through the real client, broker and worker.

Four customers (USD, CAD, EUR, and Dan on a test clock). Bea, billed in CAD, has 260 pending CAD items, so
her CAD invoice chain shows (250 items, then 10), and 3 USD items invoiced apart.
Same-currency credit is applied at finalization; a 10.00 USD amount-off coupon is
ignored on Bea's CAD invoices and used on her USD one; a credit note on a paid CAD
invoice credits her CAD balance. Dan subscribes on a test clock: four months of
renewals go by, with a 3-month coupon and a switch from USD to EUR.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from domain.credit import credit_available
from domain.money import format_amount
from tasks.client import BillingClient
from tasks.ids import derived_id
from worker.db import read_session
from worker.devtools.embedded import EmbeddedWorker
from worker.devtools.receiver import Receiver
from worker.logs import mask_secrets
from worker.settings import get_settings
from worker.views import customer_balances, get_object, list_objects


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(
            c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w)
            for c, w in zip(r, widths, strict=True)
        )
        for r in rows
    ]
    return "\n".join(out)


def _wait(worker: EmbeddedWorker, what: str, echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    worker.wait_idle(timeout=300)
    echo(f"  … {what} ({time.monotonic() - started:.1f}s)")


def enqueue_and_run(
    client: BillingClient, worker: EmbeddedWorker, echo: Callable[[str], None]
) -> dict[str, Any]:
    tag = str(int(time.time() * 1000))
    echo("1. customers, a coupon and a tax rate")
    ada = client.create_customer(
        email="ada@example.com",
        name="Ada Lovelace",
        currency="usd",
        preferred_locales=["de-DE", "en"],
        address={"line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117", "country": "DE"},
        metadata={"user_id": f"ada-{tag}"},
    )
    bea = client.create_customer(
        email="bea@example.ca",
        name="Béatrice Tremblay",
        currency="cad",
        preferred_locales=["fr-CA", "en"],
        address={
            "line1": "1 rue Saint-Paul",
            "city": "Montréal",
            "state": "QC",
            "postal_code": "H2Y 1G7",
            "country": "CA",
        },
        metadata={"user_id": f"bea-{tag}"},
    )
    chloe = client.create_customer(
        email="chloe@example.fr",
        name="Chloé Martin",
        currency="eur",
        preferred_locales=["fr-FR"],
        address={"line1": "12 rue de Rivoli", "city": "Paris", "postal_code": "75004", "country": "FR"},
        tax_id_data=[{"type": "eu_vat", "value": "FR40303265045"}],
        metadata={"user_id": f"chloe-{tag}"},
    )
    coupon = client.create_coupon(
        id=f"USD10OFF-{tag}", name="10.00 USD off", amount_off=1000, currency="usd", duration="forever"
    )
    vat = client.create_tax_rate(display_name="TVA", percentage="20", inclusive=False, country="FR")
    _wait(worker, "customers created", echo)

    echo("2. items (260 CAD + 3 USD for Bea), credit, discount")
    client.create_invoice_items(
        [
            {
                "customer": bea,
                "currency": "cad",
                "amount": 500 + 100 * (i % 10),
                "description": f"API calls, batch {i + 1}",
            }
            for i in range(260)
        ]
    )
    client.create_invoice_items(
        [
            {"customer": bea, "currency": "usd", "unit_amount": 1500, "quantity": q, "description": "Seat"}
            for q in (1, 2, 3)
        ]
    )
    client.create_invoice_items(
        [
            {"customer": ada, "amount": a, "description": d}
            for a, d in ((4900, "Pro plan"), (1200, "Extra storage"))
        ]
    )
    client.create_invoice_items(
        [
            {"customer": chloe, "amount": a, "tax_rates": [vat], "description": d}
            for a, d in ((3000, "Abonnement"), (1500, "Support"))
        ]
    )
    client.create_balance_transaction(
        customer=ada, amount=-2000, currency="usd", description="Goodwill credit"
    )
    client.create_balance_transaction(
        customer=bea, amount=-5000, currency="cad", description="Prepaid CAD credit"
    )
    client.attach_discount(bea, coupon)
    _wait(worker, "items, credit and discount recorded", echo)

    echo("3. invoice everything pending, finalized (one chain per customer and currency);")
    echo("   Chloé's is sent (send_invoice, due in 30 days): she gets it by email")
    runs = {c: client.invoice_pending(c, finalize=True) for c in (ada, bea)}
    runs[chloe] = client.invoice_pending(
        chloe, finalize=True, collection_method="send_invoice", days_until_due=30
    )
    _wait(worker, "invoice chains finished", echo)
    fate = runs[bea].wait(timeout=60)  # what the producer learns without the database (README)
    echo(f"  … Bea's run as her producer sees it, runs[bea].wait(): {fate.status}, {', '.join(fate.ids)}")

    echo("4. Bea pays her second CAD invoice out of band; a 7.50 CAD credit note credits her CAD balance")
    first_cad = derived_id("in", f"{runs[bea]}:cad")
    second_cad = derived_id("in", f"{runs[bea]}:cad:part2")
    client.pay_invoice(second_cad)
    _wait(worker, "payment recorded", echo)
    client.create_credit_note(
        invoice=second_cad, amount=750, credit_amount=750, reason="product_unsatisfactory"
    )
    _wait(worker, "credit note issued", echo)

    echo("5. Dan, on a test clock from 31 Jan 2026: 3 seats of Pro (20.00 USD or 18.00 EUR a month),")
    echo("   25 % off for 3 months; the clock moves to 31 Mar, he switches to EUR, the clock moves to 31 May")
    clock = client.create_test_clock(frozen_time=_utc(2026, 1, 31, 10), name=f"demo-{tag}")
    dan = client.create_customer(
        email="dan@example.com",
        name="Dan Brown",
        currency="usd",
        preferred_locales=["ja-JP"],
        test_clock=clock,
        metadata={"user_id": f"dan-{tag}"},
    )
    pro = client.create_product(name="Pro")
    monthly = client.create_price(
        product=pro,
        currency="usd",
        unit_amount=2000,
        currency_options={"eur": {"unit_amount": 1800}},
        recurring={"interval": "month"},
    )
    quarter = client.create_coupon(
        id=f"QUARTER25-{tag}",
        name="25 % off, 3 months",
        percent_off="25",
        duration="repeating",
        duration_in_months=3,
    )
    _wait(worker, "clock, customer, product, price and coupon created", echo)
    client.create_subscription(customer=dan, items=[{"price": monthly, "quantity": 3}], coupon=quarter)
    _wait(worker, "subscribed: the first period is invoiced at once", echo)
    client.advance_test_clock(clock, _utc(2026, 3, 31, 12))
    _wait(worker, "clock at 31 Mar: February and March renewed, their drafts finalized an hour later", echo)
    client.change_subscription_currency(dan, "eur")
    client.advance_test_clock(clock, _utc(2026, 5, 31, 12))
    _wait(worker, "clock at 31 May: April and May billed in EUR, the coupon over", echo)
    return {
        "customers": {"Ada": ada, "Bea": bea, "Chloé": chloe, "Dan": dan},
        "first_cad": first_cad,
        "second_cad": second_cad,
    }


def _utc(year: int, month: int, day: int, hour: int) -> int:
    return calendar.timegm((year, month, day, hour, 0, 0))


def report(run: dict[str, Any], echo: Callable[[str], None]) -> None:
    names = {v: k for k, v in run["customers"].items()}
    rows = []
    with read_session() as session:
        for customer in run["customers"].values():
            invoices = list_objects(session, "invoices", customer=customer, limit=100)["data"]
            for inv in sorted(invoices, key=lambda i: i["number"] or ""):
                cur = inv["currency"]
                discount = sum(d["amount"] for d in inv["total_discount_amounts"])
                tax = sum(t["amount"] for t in inv["total_taxes"])
                credit = inv["starting_balance"] - (inv["ending_balance"] or 0)
                rows.append(
                    [
                        names[customer],
                        inv["number"] or inv["id"],
                        cur.upper(),
                        str(inv["lines"]["total_count"]),
                        format_amount(inv["subtotal"], cur),
                        format_amount(discount, cur),
                        format_amount(tax, cur),
                        format_amount(inv["total"], cur),
                        format_amount(-credit, cur) if credit else "-",
                        format_amount(inv["amount_due"], cur),
                        inv["status"],
                    ]
                )
        echo("\nInvoices")
        echo(
            _table(
                [
                    "customer",
                    "number",
                    "cur",
                    "lines",
                    "subtotal",
                    "discount",
                    "tax",
                    "total",
                    "credit used",
                    "due",
                    "status",
                ],
                rows,
            )
        )
        balance_rows = []
        for name, customer in run["customers"].items():
            for cur, balance in sorted(customer_balances(session, customer).items()):
                balance_rows.append([name, cur.upper(), format_amount(credit_available(balance), cur)])
        echo("\nCredit balance per currency (positive = credit available)")
        echo(_table(["customer", "currency", "credit"], balance_rows))
        pending = list_objects(session, "invoice_items", customer=run["customers"]["Bea"], pending=True)[
            "data"
        ]
        bea = get_object(session, run["customers"]["Bea"], expand=["invoice_credit_balance"])
        echo(
            f"\nBea: default currency {bea['currency']}, pending items left: {len(pending)}, "
            f"invoice_credit_balance = {bea['invoice_credit_balance']}"
        )
        failures = list_objects(session, "task_failures", limit=100)["data"]
        echo(f"Recorded task failures: {len(failures)}")


def write_documents(run: dict[str, Any], directory: Path, echo: Callable[[str], None]) -> list[Path]:
    """Write the PDF of every invoice and credit note of the run, as the document worker made it."""
    from worker.documents.store import DatabaseStore

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with read_session() as session:
        store = DatabaseStore(session)
        for name, customer in run["customers"].items():
            objects = [
                *list_objects(session, "invoices", customer=customer, limit=100)["data"],
                *list_objects(session, "credit_notes", customer=customer, limit=100)["data"],
            ]
            for obj in objects:
                document = store.get(obj["id"])
                if document is None:
                    continue
                path = directory / f"{name}-{obj['number']}.pdf"
                path.write_bytes(document.content)
                written.append(path)
    echo(f"\nDocuments: {len(written)} PDFs in {directory.resolve()} (billing pdf <in_…|cn_…> -o FILE;")
    echo("  Ada in German, Bea in Canadian French, Chloé in French, Dan in Japanese)")
    settings = get_settings()
    if settings.smtp_url:
        echo(f"Emails: sent through {settings.smtp_url.split('@')[-1]} (Chloé's invoice, Bea's credit note)")
    else:
        emails = sorted(Path(settings.emails_dir).glob("*.eml"))
        echo(f"Emails: {len(emails)} .eml files in {Path(settings.emails_dir).resolve()} (Chloé's invoice,")
        echo("  Bea's credit note; BILLING_SMTP_URL sends them instead)")
    return written


DEMO_EVENTS = ["customer.created", "invoice.*", "credit_note.created", "customer.subscription.*"]
"""What the demo's webhook endpoint receives."""


def webhook_endpoint(
    client: BillingClient, receiver: Receiver, worker: EmbeddedWorker, echo: Callable[[str], None]
) -> str:
    """A webhook endpoint on this machine, whose receiver verifies every signature."""
    echo(f"0. a webhook endpoint: {receiver.url} (a receiver in this process, verifying signatures)")
    created = client.create_webhook_endpoint(
        url=receiver.url, enabled_events=DEMO_EVENTS, description="billing demo receiver"
    )
    receiver.secret = created.secret
    _wait(worker, f"endpoint {created.id} created", echo)
    return created.id


def webhook_report(receiver: Receiver, echo: Callable[[str], None]) -> None:
    by_type: dict[str, int] = {}
    for received in receiver.received:
        by_type[received.event["type"]] = by_type.get(received.event["type"], 0) + 1
    verified = sum(r.verified for r in receiver.received)
    echo(
        f"\nWebhooks received by the demo endpoint: {len(receiver.received)}, signature verified: {verified}"
    )
    echo(_table(["event type", "received"], [[t, str(n)] for t, n in sorted(by_type.items())]))


def run_demo(echo: Callable[[str], None] = click.echo) -> dict[str, Any]:
    from worker.app import app
    from worker.migrate import upgrade

    settings = get_settings()
    echo(f"database: {mask_secrets(settings.database_url)}\nbroker:   {mask_secrets(settings.broker_url)}")
    upgrade()
    # The demo's receiver listens on 127.0.0.1, which webhooks refuse unless allowed: allowed
    # here, for this process (its in-process worker) only.
    allowed = os.environ.get("BILLING_WEBHOOKS_ALLOW_PRIVATE")
    os.environ["BILLING_WEBHOOKS_ALLOW_PRIVATE"] = "true"
    get_settings.cache_clear()
    try:
        with Receiver() as receiver, EmbeddedWorker(app) as worker:
            client = BillingClient(app=app)
            endpoint = webhook_endpoint(client, receiver, worker, echo)
            run = enqueue_and_run(client, worker, echo)
            client.delete_webhook_endpoint(endpoint)
            _wait(worker, "webhook endpoint deleted", echo)
    finally:
        if allowed is None:
            os.environ.pop("BILLING_WEBHOOKS_ALLOW_PRIVATE", None)
        else:
            os.environ["BILLING_WEBHOOKS_ALLOW_PRIVATE"] = allowed
        get_settings.cache_clear()
    report(run, echo)
    write_documents(run, Path(settings.documents_dir), echo)
    webhook_report(receiver, echo)
    run["webhooks"] = receiver.received
    return run
