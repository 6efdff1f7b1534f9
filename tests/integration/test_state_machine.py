"""A property-based walk through the billing operations on SQLite and PostgreSQL.

Hypothesis drives random sequences of requests (customers, item batches, balance
adjustments, coupons, invoice chains, the invoice lifecycle, credit notes) and, like a
broker that redelivers, sends earlier requests again: with the same key and payload
(must replay and change nothing, follow-ups included, as the worker would publish
them) and with the same key but another parameter (must be refused with
``IdempotencyConflict`` and change nothing). Each request is run as the worker runs it
(``tests.support.call``); a refused request must be refused with the error the model
expects and leave every row as it was.

After every step: the audit finds nothing, every item is pending or on one existing
invoice, no invoice has more than 250 lines, and the items of each (customer, currency)
add up to what the model created.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlmodel import SQLModel

from domain.errors import (
    BadRequest,
    BillingError,
    IdempotencyConflict,
    NotFound,
    NothingToInvoice,
    WrongState,
)
from domain.invoices import MAX_LINES_PER_INVOICE
from tasks.ids import PREFIXES, new_id
from tests import support
from tests.conftest import empty_tables
from tests.support import CREATES, call
from worker.audit import audit
from worker.db import read_session
from worker.services.base import Outcome
from worker.tables import CouponRow, CreditNote, Customer, Invoice, InvoiceItem

CURRENCIES = ("usd", "cad", "eur")
CREATE_INVOICE = "billing.invoices.create"
INVOICE_ACTIONS = frozenset(
    f"billing.invoices.{action}" for action in ("finalize", "void", "pay", "mark_uncollectible", "delete")
)
SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    database=None,  # no example database written into the working tree
    report_multiple_bugs=False,  # shrink one failure well rather than several within the time limit
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BOOKKEEPING = frozenset({"outbox", "task_failures"})
"""Tables a replay may legitimately touch (closing its own outbox row); not billing state."""

Expected = type[BillingError] | None


def snapshot(*, skip: frozenset[str] = frozenset()) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    with read_session() as session:
        return {
            table.name: [
                tuple(row) for row in session.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in SQLModel.metadata.sorted_tables
            if table.name not in skip
        }


def assert_same(
    before: dict[str, list[tuple[Any, ...]]], what: str, *, skip: frozenset[str] = frozenset()
) -> None:
    after = snapshot(skip=skip)
    changed = [name for name in before if before[name] != after.get(name)]
    assert not changed, f"{what} changed {changed}"


@contextmanager
def unchanged(what: str, *, skip: frozenset[str] = frozenset()) -> Iterator[None]:
    before = snapshot(skip=skip)
    yield
    assert_same(before, what, skip=skip)


class BillingMachine(RuleBasedStateMachine):
    url = ""
    """Database URL, set by the test that runs the machine."""

    customers = Bundle("customers")
    coupons = Bundle("coupons")
    invoices = Bundle("invoices")
    credit_notes = Bundle("credit_notes")

    def __init__(self) -> None:
        super().__init__()
        empty_tables(self.url)
        self.created: dict[tuple[str, str], tuple[int, int]] = {}
        """(customer, currency) -> (items created, sum of their amounts)."""
        self.sent: list[tuple[str, dict[str, Any]]] = []
        """Every request that succeeded, follow-ups included: what a broker may deliver again."""
        self.serial = 0

    # -- sending requests ------------------------------------------------------------------

    def send(self, operation: str, expected: Expected, /, **payload: Any) -> Outcome | None:
        """Run one request; ``expected`` is the error the model predicts (None: success)."""
        if operation in CREATES and "id" not in payload:
            payload["id"] = new_id(PREFIXES[CREATES[operation]])
        payload.setdefault("idempotency_key", new_id("req"))
        before = snapshot() if expected else {}  # an unexpected refusal fails the test anyway
        try:
            outcome = call(operation, **copy.deepcopy(payload))
        except BillingError as error:
            assert expected is not None, f"{operation} {payload} refused: {error!r}"
            assert isinstance(error, expected), f"{operation}: {error!r}, expected {expected.__name__}"
            assert_same(before, f"refused {operation} {payload}")
            return None
        assert expected is None, f"{operation} {payload} succeeded; expected {expected.__name__}"
        self.sent.append((operation, payload))
        return outcome

    def run_follow_ups(self, outcome: Outcome) -> list[str]:
        """Run the follow-ups an outcome asks for, and theirs, as the worker publishes them."""
        ids, queue = [], support.billing_follow_ups(outcome)
        while queue:
            follow_up = queue.pop(0)
            nxt = self.send(follow_up.task_name, None, **copy.deepcopy(follow_up.payload))
            assert nxt is not None
            if nxt.id:
                ids.append(nxt.id)
            queue.extend(support.billing_follow_ups(nxt))
        return ids

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    # -- reading state the model does not keep ---------------------------------------------

    @staticmethod
    def row(model: type[SQLModel], object_id: str) -> Any:
        with read_session() as session:
            return session.get(model, object_id)

    @staticmethod
    def pending(customer: str, currency: str) -> int:
        with read_session() as session:
            return session.execute(
                select(func.count()).where(
                    InvoiceItem.customer_id == customer,  # type: ignore[arg-type]
                    InvoiceItem.currency == currency,  # type: ignore[arg-type]
                    InvoiceItem.invoice_id.is_(None),  # type: ignore[union-attr]
                )
            ).scalar_one()

    def invoice_status(self, invoice: str) -> str | None:
        row = self.row(Invoice, invoice)
        return row.status if row else None

    @staticmethod
    def exhausted(coupon: str) -> bool:
        row = BillingMachine.row(CouponRow, coupon)
        return row.max_redemptions is not None and row.times_redeemed >= row.max_redemptions

    # -- customers, items, credit, coupons -------------------------------------------------

    @rule(target=customers, currency=st.sampled_from((*CURRENCIES, None)))
    def create_customer(self, currency: str | None) -> str:
        outcome = self.send("billing.customers.create", None, **({"currency": currency} if currency else {}))
        assert outcome and outcome.id
        return outcome.id

    def add_items(self, customer: str, currency: str, amounts: list[int]) -> None:
        batch = [
            {
                "id": new_id("ii"),
                "idempotency_key": new_id("req"),
                "customer": customer,
                "currency": currency,
                "amount": amount,
            }
            for amount in amounts
        ]
        self.send("billing.invoice_items.create_many", None, items=batch)
        count, total = self.created.get((customer, currency), (0, 0))
        self.created[(customer, currency)] = (count + len(amounts), total + sum(amounts))

    @rule(
        customer=customers,
        currency=st.sampled_from(CURRENCIES),
        amounts=st.lists(st.integers(-2000, 50_000), min_size=1, max_size=40),
    )
    def add_item_batch(self, customer: str, currency: str, amounts: list[int]) -> None:
        self.add_items(customer, currency, amounts)

    @rule(
        customer=customers,
        currency=st.sampled_from(CURRENCIES),
        count=st.integers(MAX_LINES_PER_INVOICE - 5, MAX_LINES_PER_INVOICE + 30),
        amount=st.integers(-50, 5000),
    )
    def add_backlog(self, customer: str, currency: str, count: int, amount: int) -> None:
        """Enough items at once to make invoice generation chain (sizes around the 250 cap)."""
        self.add_items(customer, currency, [amount + i for i in range(count)])

    @rule(
        customer=customers,
        amount=st.integers(-5000, 5000).filter(bool),
        currency=st.sampled_from((*CURRENCIES, None)),
    )
    def adjust_balance(self, customer: str, amount: int, currency: str | None) -> None:
        payload: dict[str, Any] = {"customer": customer, "amount": amount}
        if currency:
            payload["currency"] = currency
        no_currency = currency is None and self.row(Customer, customer).currency is None
        self.send("billing.balance_transactions.create", BadRequest if no_currency else None, **payload)

    @rule(
        target=coupons,
        percent_off=st.none() | st.sampled_from(["5", "12.5", "50", "100"]),
        amount_off=st.integers(1, 3000),
        currency=st.sampled_from(CURRENCIES),
        duration=st.sampled_from(["once", "forever", "repeating"]),
        max_redemptions=st.none() | st.integers(1, 2),
    )
    def create_coupon(
        self,
        percent_off: str | None,
        amount_off: int,
        currency: str,
        duration: str,
        max_redemptions: int | None,
    ) -> str:
        payload: dict[str, Any] = {"id": f"CO{self.next_serial()}", "duration": duration}
        payload |= (
            {"percent_off": percent_off} if percent_off else {"amount_off": amount_off, "currency": currency}
        )
        if duration == "repeating":
            payload["duration_in_months"] = 3
        if max_redemptions:
            payload["max_redemptions"] = max_redemptions
        self.send("billing.coupons.create", None, **payload)
        return payload["id"]

    @rule(customer=customers, coupon=coupons)
    def attach_coupon(self, customer: str, coupon: str) -> None:
        expected = BadRequest if self.exhausted(coupon) else None
        self.send("billing.discounts.create", expected, customer=customer, coupon=coupon)

    # -- invoices --------------------------------------------------------------------------

    @rule(
        target=invoices,
        customer=customers,
        currency=st.sampled_from((*CURRENCIES, None)),
        finalize=st.booleans(),
        coupon=st.none() | coupons,
    )
    def create_invoice(self, customer: str, currency: str | None, finalize: bool, coupon: str | None) -> Any:
        payload: dict[str, Any] = {"customer": customer, "finalize": finalize}
        if currency:
            payload["currency"] = currency
        if coupon:
            payload["discounts"] = [{"coupon": coupon}]
        billed_in = currency or self.row(Customer, customer).currency
        backlog = self.pending(customer, billed_in) if billed_in else 0
        expected: Expected = None
        if billed_in is None:
            expected = BadRequest
        elif backlog == 0:
            expected = NothingToInvoice
        elif coupon and self.exhausted(coupon):
            expected = BadRequest
        outcome = self.send(CREATE_INVOICE, expected, **payload)
        if outcome is None:
            return multiple()
        assert outcome.id and billed_in
        chain = [outcome.id, *self.run_follow_ups(outcome)]
        # The chain sweeps the whole backlog of that currency, 250 lines an invoice.
        assert len(chain) == math.ceil(backlog / MAX_LINES_PER_INVOICE), (backlog, chain)
        assert self.pending(customer, billed_in) == 0
        wanted = ("open", "paid") if finalize else ("draft",)
        for invoice in chain:
            row = self.row(Invoice, invoice)
            assert (row.currency, row.customer_id) == (billed_in, customer)
            assert row.status in wanted, (invoice, row.status, finalize)
        return multiple(*chain)

    @rule(target=invoices, customer=customers, finalize=st.booleans())
    def invoice_all_pending(self, customer: str, finalize: bool) -> Any:
        """``create_for_pending``: one chain per currency with pending items, run to the end."""
        with read_session() as session:
            backlog = dict(
                session.execute(
                    select(InvoiceItem.currency, func.count())
                    .where(InvoiceItem.customer_id == customer, InvoiceItem.invoice_id.is_(None))  # type: ignore[arg-type,union-attr]
                    .group_by(InvoiceItem.currency)
                ).all()
            )
        outcome = self.send("billing.invoices.create_for_pending", None, customer=customer, finalize=finalize)
        assert outcome is not None
        chains = self.run_follow_ups(outcome)
        assert len(chains) == sum(math.ceil(n / MAX_LINES_PER_INVOICE) for n in backlog.values()), backlog
        assert all(self.pending(customer, currency) == 0 for currency in backlog)
        return multiple(*chains)

    def invoice_action(self, operation: str, invoice: str, allowed: tuple[str, ...]) -> None:
        status = self.invoice_status(invoice)
        expected: Expected = NotFound if status is None else (None if status in allowed else WrongState)
        self.send(operation, expected, invoice=invoice)

    @rule(invoice=invoices)
    def finalize(self, invoice: str) -> None:
        self.invoice_action("billing.invoices.finalize", invoice, ("draft",))

    @rule(invoice=invoices)
    def void(self, invoice: str) -> None:
        self.invoice_action("billing.invoices.void", invoice, ("open", "uncollectible"))

    @rule(invoice=invoices)
    def pay(self, invoice: str) -> None:
        self.invoice_action("billing.invoices.pay", invoice, ("open", "uncollectible"))

    @rule(invoice=invoices)
    def mark_uncollectible(self, invoice: str) -> None:
        self.invoice_action("billing.invoices.mark_uncollectible", invoice, ("open",))

    @rule(invoice=invoices)
    def delete_draft(self, invoice: str) -> None:
        self.invoice_action("billing.invoices.delete", invoice, ("draft",))

    # -- credit notes ----------------------------------------------------------------------

    @rule(
        target=credit_notes,
        invoice=invoices,
        percent=st.integers(1, 100),
        over=st.booleans(),
        split=st.booleans(),
    )
    def credit_note(self, invoice: str, percent: int, over: bool, split: bool) -> Any:
        """A note of ``percent`` of what is still creditable, or (``over``) more than that."""
        row = self.row(Invoice, invoice)
        if row is None:
            self.send("billing.credit_notes.create", NotFound, invoice=invoice, amount=100)
            return multiple()
        with read_session() as session:
            credited = session.execute(
                select(func.coalesce(func.sum(CreditNote.amount), 0)).where(
                    CreditNote.invoice_id == invoice,  # type: ignore[arg-type]
                    CreditNote.status == "issued",  # type: ignore[arg-type]
                )
            ).scalar_one()
        creditable = max(row.total, 0) - int(credited)
        amount = creditable + percent if over else max(1, creditable * percent // 100)
        payload: dict[str, Any] = {"invoice": invoice, "amount": amount}
        if split:
            payload |= {"refund_amount": amount // 2, "credit_amount": amount - amount // 2}
        expected: Expected = None
        if row.status not in ("open", "paid"):
            expected = WrongState
        elif amount > creditable or (split and row.status == "open"):
            expected = BadRequest
        outcome = self.send("billing.credit_notes.create", expected, **payload)
        return multiple(outcome.id) if outcome else multiple()

    @rule(note=credit_notes)
    def void_credit_note(self, note: str) -> None:
        row = self.row(CreditNote, note)
        invoice_open = self.invoice_status(row.invoice_id) == "open"
        expected = None if row.status == "issued" and invoice_open else WrongState
        self.send("billing.credit_notes.void", expected, credit_note=note)

    # -- redelivery ------------------------------------------------------------------------

    def earlier(self, back: int) -> tuple[str, dict[str, Any]]:
        """The ``back``-th latest successful request (counting round, follow-ups included).

        Counted from the end, so that Hypothesis can drop earlier unrelated steps of a
        failing run without changing which request is sent again.
        """
        operation, payload = self.sent[-1 - back % len(self.sent)]
        return operation, copy.deepcopy(payload)

    @precondition(lambda self: self.sent)
    @rule(back=st.integers(0, 7))
    def redeliver(self, back: int) -> None:
        """The same message again: replays, and its follow-ups (published again) change nothing."""
        operation, payload = self.earlier(back)
        with unchanged(f"redelivered {operation} {payload}", skip=BOOKKEEPING):
            outcome = call(operation, **copy.deepcopy(payload))
            assert outcome.replayed, (operation, payload)
            for follow_up in outcome.follow_ups:  # what the worker publishes after a replay
                again = call(follow_up.task_name, **copy.deepcopy(follow_up.payload))
                assert again.replayed and not support.billing_follow_ups(again), (operation, payload)

    @precondition(lambda self: self.sent)
    @rule(back=st.integers(0, 7))
    def reuse_key_with_other_parameters(self, back: int) -> None:
        operation, payload = self.earlier(back)
        changed = self.changed(operation, payload)
        if changed is None:
            return
        with unchanged(f"conflicting {operation} {changed}"), pytest.raises(IdempotencyConflict):
            call(operation, **changed)

    def changed(self, operation: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The payload with one parameter changed, in a way that reaches the key check."""
        if operation == "billing.invoice_items.create_many":
            payload["items"][0]["description"] = "changed"
        elif operation == "billing.discounts.create":
            payload["coupon"] += "X"
        elif operation == "billing.coupons.create":
            payload["name"] = "changed"
        elif operation == "billing.credit_notes.create":
            payload["memo"] = "changed"
        elif operation == "billing.invoices.pay":
            payload["paid_out_of_band"] = True
        elif operation in ("billing.credit_notes.void",):
            other = self.other(CreditNote, payload["credit_note"])
            if other is None:
                return None
            payload["credit_note"] = other
        elif operation in INVOICE_ACTIONS:
            other = self.other(Invoice, payload["invoice"])
            if other is None:
                return None
            payload["invoice"] = other
        else:  # customers, adjustments, invoices (any part of a chain)
            payload["description"] = "changed"
        return payload

    @staticmethod
    def other(model: Any, object_id: str) -> str | None:
        with read_session() as session:
            return session.execute(
                select(model.id).where(model.id != object_id).order_by(model.id).limit(1)
            ).scalar()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        with read_session() as session:
            assert audit(session) == []
            orphans = session.execute(
                select(func.count())
                .select_from(InvoiceItem)
                .outerjoin(Invoice, Invoice.id == InvoiceItem.invoice_id)  # type: ignore[arg-type]
                .where(InvoiceItem.invoice_id.is_not(None), Invoice.id.is_(None))  # type: ignore[union-attr]
            ).scalar_one()
            assert orphans == 0
            lines = (
                select(func.count().label("n"))
                .where(InvoiceItem.invoice_id.is_not(None))  # type: ignore[union-attr]
                .group_by(InvoiceItem.invoice_id)
                .subquery()
            )
            most = session.execute(select(func.coalesce(func.max(lines.c.n), 0))).scalar_one()
            assert most <= MAX_LINES_PER_INVOICE
            found: dict[tuple[str, str], tuple[int, int]] = {}
            for invoiced in (False, True):
                stmt = (
                    select(
                        InvoiceItem.customer_id,
                        InvoiceItem.currency,
                        func.count(),
                        func.sum(InvoiceItem.amount),
                    )
                    .group_by(InvoiceItem.customer_id, InvoiceItem.currency)
                    .where(
                        InvoiceItem.invoice_id.is_not(None) if invoiced else InvoiceItem.invoice_id.is_(None)
                    )  # type: ignore[union-attr]
                )
                for customer, currency, count, total in session.execute(stmt):
                    before = found.get((customer, currency), (0, 0))
                    found[(customer, currency)] = (before[0] + count, before[1] + int(total))
            assert found == self.created


def test_random_billing_histories_keep_the_books(database: str) -> None:
    machine = type("Machine", (BillingMachine,), {"url": database})
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- what the machine found, kept as plain regression tests ----------------------------------


@pytest.mark.usefixtures("database")
def test_a_late_redelivery_of_an_invoice_create_does_not_invoice_newer_items() -> None:
    """domain/README.md §9: the same key and parameters return the first result and create nothing.

    A replayed ``invoices.create`` used to ask again for the next part of its chain
    whenever items of its currency were pending, so a redelivery after the chain ended
    started a new part that invoiced items added since, or returned by a deleted draft.
    The machine's shrunk run: customer; item; draft of it; delete the draft; redeliver
    the create. A replay now asks only for what the first run recorded in the outbox.
    """
    cus = support.customer("usd")
    support.items(cus, "usd", [100])
    payload = {"customer": cus, "id": new_id("in"), "idempotency_key": "inv-late"}
    first = call(CREATE_INVOICE, **payload)
    assert first.follow_ups == []  # the chain ended with this invoice
    support.items(cus, "usd", [200])  # to be billed by some later request
    with unchanged("a late redelivery", skip=BOOKKEEPING):
        again = call(CREATE_INVOICE, **payload)
        assert (again.id, again.replayed) == (first.id, True)
        assert again.follow_ups == [], "the worker would publish a part 2 that invoices the newer item"


@pytest.mark.usefixtures("database")
def test_a_late_redelivery_of_create_for_pending_does_not_invoice_newer_items() -> None:
    """The same for ``create_for_pending``, whose replay used to plan one chain per
    currency pending at the redelivery rather than when it ran. The machine's shrunk
    run: customer; invoice everything pending (nothing); item; redeliver."""
    cus = support.customer("usd")
    payload = {"customer": cus, "idempotency_key": "all-late"}
    assert call("billing.invoices.create_for_pending", **payload).follow_ups == []
    support.items(cus, "usd", [200])
    with unchanged("a late redelivery", skip=BOOKKEEPING):
        again = call("billing.invoices.create_for_pending", **payload)
        assert again.replayed
        assert again.follow_ups == [], "the worker would publish a usd chain for the newer item"


@pytest.mark.usefixtures("database")
def test_a_redelivered_delete_of_a_draft_replays() -> None:
    """The deleted draft's row is gone; ``lock_invoice`` used to raise NotFound before
    the key was looked up, so a request that had succeeded came back as a missing
    reference (retried, then recorded as a task failure) instead of replaying. The
    machine's shrunk run: customer; item; draft; delete it; redeliver the delete."""
    cus = support.customer("usd")
    support.items(cus, "usd", [100])
    draft = support.invoice(cus).id
    payload = {"invoice": draft, "idempotency_key": "delete-1"}
    call("billing.invoices.delete", **payload)
    again = call("billing.invoices.delete", **payload)
    assert (again.id, again.replayed) == (draft, True)
