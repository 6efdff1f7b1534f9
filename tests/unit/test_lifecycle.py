"""Invoice lifecycle, numbering, due dates and month arithmetic (domain/README.md §4, §8)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain import invoices
from domain.errors import WrongState
from domain.invoices import (
    InvoiceStatus,
    check_deletable,
    due_date,
    invoice_number,
    settle,
    transition,
)
from domain.periods import add_months

STATUSES = ["draft", "open", "paid", "void", "uncollectible"]
ACTIONS = ["finalize", "delete", "pay", "void", "mark_uncollectible"]

# domain/README.md §4: draft -> open (finalize) -> paid | void | uncollectible; uncollectible ->
# paid | void; paid and void are terminal; only drafts can be deleted (and a deleted invoice has
# no status).
NEW_STATUS: dict[tuple[str, str], str | None] = {
    ("draft", "finalize"): "open",
    ("draft", "delete"): None,
    ("open", "pay"): "paid",
    ("open", "void"): "void",
    ("open", "mark_uncollectible"): "uncollectible",
    ("uncollectible", "pay"): "paid",
    ("uncollectible", "void"): "void",
}
ALLOWED = set(NEW_STATUS)

TRANSITIONS = [
    pytest.param(status, action, (status, action) in ALLOWED, id=f"{status}-{action}")
    for status in STATUSES
    for action in ACTIONS
]


def act(status: str, action: str) -> InvoiceStatus | None:
    """What the lifecycle answers to ``action`` on an invoice of ``status``."""
    if action == "delete":
        check_deletable("in_TEST", status)
        return None
    return transition("in_TEST", status, action)


@pytest.mark.parametrize(("status", "action", "allowed"), TRANSITIONS)
def test_state_machine(status: str, action: str, allowed: bool) -> None:
    if allowed:
        new = act(status, action)
        assert new == NEW_STATUS[(status, action)]
        assert new is None or isinstance(new, InvoiceStatus)
        return
    with pytest.raises(WrongState) as caught:
        act(status, action)
    assert caught.value.field == "invoice"
    assert caught.value.code == "invalid_state"
    assert f"is {status};" in caught.value.message
    assert "in_TEST" in caught.value.message


def test_state_machine_table_is_exhaustive() -> None:
    assert sorted(invoices.ACTIONS) == sorted(ACTIONS)
    assert [status.value for status in InvoiceStatus] == STATUSES
    assert len(TRANSITIONS) == 25
    assert sum(1 for p in TRANSITIONS if p.values[2]) == 7


@pytest.mark.parametrize(
    ("status", "action", "message"),
    [
        pytest.param(
            "paid",
            "void",
            "invoice in_TEST is paid; only open or uncollectible invoices can be voided",
            id="paid-void",
        ),
        pytest.param(
            "open", "delete", "invoice in_TEST is open; only draft invoices can be deleted", id="open-delete"
        ),
        pytest.param(
            "uncollectible",
            "mark_uncollectible",
            "invoice in_TEST is uncollectible; only open invoices can be marked uncollectible",
            id="uncollectible-mark",
        ),
    ],
)
def test_wrong_state_message(status: str, action: str, message: str) -> None:
    with pytest.raises(WrongState) as caught:
        act(status, action)
    assert caught.value.message == message
    assert str(caught.value) == f"invoice: {message}"


@pytest.mark.parametrize(
    ("amount_due", "landing"),
    [
        pytest.param(4100, "open", id="something-due-open"),
        pytest.param(1, "open", id="one-unit-due-open"),
        pytest.param(0, "paid", id="credit-covered-it-paid"),
    ],
)
def test_finalize_lands_on_open_or_paid(amount_due: int, landing: str) -> None:
    assert settle(transition("in_TEST", "draft", "finalize"), amount_due) == landing


@pytest.mark.parametrize("status", STATUSES)
def test_settle_pays_only_an_open_invoice_with_nothing_remaining(status: str) -> None:
    assert settle(status, 0) == ("paid" if status == "open" else status)
    assert settle(status, 500) == status
    assert isinstance(settle(status, 0), InvoiceStatus)


@pytest.mark.parametrize(
    ("prefix", "sequence", "number"),
    [
        pytest.param("ACME", 1, "ACME-0001", id="first"),
        pytest.param("ACME", 42, "ACME-0042", id="padded"),
        pytest.param("A1B2C3D4E5F6", 9999, "A1B2C3D4E5F6-9999", id="four-digits-long-prefix"),
        pytest.param("ACME", 10000, "ACME-10000", id="past-four-digits"),
        pytest.param("X", 123456, "X-123456", id="six-digits"),
    ],
)
def test_invoice_number(prefix: str, sequence: int, number: str) -> None:
    assert invoice_number(prefix, sequence) == number


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        # 30 days = 30 * 86400 = 2,592,000 seconds.
        pytest.param(1_700_000_000, 30, 1_702_592_000, id="thirty-days"),
        pytest.param(1_700_000_000, 0, 1_700_000_000, id="due-on-receipt"),
        pytest.param(0, 1, 86_400, id="one-day"),
    ],
)
def test_due_date(start: int, days: int, expected: int) -> None:
    assert due_date(start, days) == expected


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        pytest.param(ts(2025, 1, 31), 1, ts(2025, 2, 28), id="jan31-to-feb28"),
        pytest.param(ts(2024, 1, 31), 1, ts(2024, 2, 29), id="jan31-to-feb29-leap"),
        pytest.param(ts(2000, 1, 31), 1, ts(2000, 2, 29), id="jan31-to-feb29-leap-2000"),
        pytest.param(ts(2100, 1, 31), 1, ts(2100, 2, 28), id="jan31-to-feb28-2100-not-leap"),
        pytest.param(ts(2025, 3, 31), 1, ts(2025, 4, 30), id="mar31-to-apr30"),
        pytest.param(ts(2025, 12, 15), 1, ts(2026, 1, 15), id="dec-to-jan-next-year"),
        pytest.param(ts(2025, 12, 31), 2, ts(2026, 2, 28), id="dec31-plus-two"),
        pytest.param(ts(2025, 1, 31), 12, ts(2026, 1, 31), id="plus-twelve"),
        pytest.param(ts(2024, 2, 29), 12, ts(2025, 2, 28), id="leap-day-plus-twelve"),
        pytest.param(ts(2024, 2, 29), 48, ts(2028, 2, 29), id="leap-day-plus-forty-eight"),
        pytest.param(ts(2025, 2, 28), 1, ts(2025, 3, 28), id="feb28-stays-28"),
        pytest.param(ts(2025, 8, 31), 6, ts(2026, 2, 28), id="aug31-plus-six"),
        pytest.param(ts(2024, 1, 31), 25, ts(2026, 2, 28), id="plus-twenty-five"),
        pytest.param(ts(2025, 5, 10), 0, ts(2025, 5, 10), id="plus-zero"),
        pytest.param(ts(2025, 1, 31, 13, 45, 7), 1, ts(2025, 2, 28, 13, 45, 7), id="keeps-time-of-day"),
        pytest.param(ts(2025, 10, 31, 23, 59, 59), 1, ts(2025, 11, 30, 23, 59, 59), id="oct31-late-evening"),
    ],
)
def test_add_months(start: int, months: int, expected: int) -> None:
    assert add_months(start, months) == expected


# Stripe's derived invoice fields (domain/README.md §4, §4.1)


def test_subtotal_excluding_tax_is_total_excluding_tax_plus_the_discounts() -> None:
    """§4.1: 2000, 10 % off, 5 % exclusive -> total_excluding_tax 1800, so 2000. §6: 10000 at
    10 % inclusive -> total_excluding_tax 9091, nothing off, so 9091."""
    assert invoices.subtotal_excluding_tax(1800, [200]) == 2000
    assert invoices.subtotal_excluding_tax(9091, []) == 9091
    assert invoices.subtotal_excluding_tax(8182, [900, 100]) == 9182


@pytest.mark.parametrize(
    ("status", "auto_advance", "expected"),
    [("draft", True, 1_000 + 3600), ("draft", False, None), ("open", True, None), ("paid", True, None)],
)
def test_automatically_finalizes_at_an_hour_after_an_auto_advance_draft_was_made(
    status: str, auto_advance: bool, expected: int | None
) -> None:
    assert invoices.automatically_finalizes_at(status, auto_advance, 1_000) == expected


def test_a_cycle_invoice_looks_back_one_period_any_other_is_its_instant() -> None:
    march, april = 1_772_359_200, 1_775_037_600  # 2026-03-01 and 2026-04-01, 10:00 UTC
    assert invoices.invoice_period(april, (march, april)) == (march, april)
    assert invoices.invoice_period(april + 5, None) == (april + 5, april + 5)
