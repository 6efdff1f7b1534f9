"""Credit notes: what a note may credit, how it settles and when it can be voided
(domain/README.md §7)."""

from __future__ import annotations

import pytest

from domain.credit import apply_credit_balance
from domain.credit_notes import (
    CreditableInvoice,
    CreditNotePlan,
    CreditNoteStatus,
    NoteAmounts,
    credit_note_number,
    creditable_amount,
    note_amounts,
    plan_credit_note,
    pre_and_post_payment,
    void_note,
)
from domain.errors import BadRequest, WrongState
from domain.pricing import DiscountAmount, TaxAmount


def invoice(
    status: str, total: int = 3000, amount_remaining: int | None = None, already_credited: int = 0
) -> CreditableInvoice:
    remaining = (total if status == "open" else 0) if amount_remaining is None else amount_remaining
    return CreditableInvoice("in_TEST", status, total, remaining, already_credited)


@pytest.mark.parametrize("status", ["draft", "void", "uncollectible"])
def test_refused_for_invoices_neither_open_nor_paid(status: str) -> None:
    with pytest.raises(WrongState) as caught:
        plan_credit_note(invoice(status), 1000)
    assert caught.value.field == "invoice"
    assert f"is {status};" in caught.value.message


@pytest.mark.parametrize(
    ("status", "total", "already_credited", "amount"),
    [
        # Total 3000, nothing credited yet: 3001 is one too many.
        pytest.param("paid", 3000, 0, 3001, id="paid-over-total"),
        pytest.param("open", 3000, 0, 3001, id="open-over-total"),
        # Earlier notes already used 1000 of 3000: only 2000 is left.
        pytest.param("paid", 3000, 1000, 2001, id="paid-over-what-earlier-notes-left"),
        pytest.param("open", 3000, 1000, 2001, id="open-over-what-earlier-notes-left"),
        # Everything already credited: nothing left at all.
        pytest.param("paid", 3000, 3000, 1, id="paid-fully-credited"),
        # A negative-total invoice has nothing to credit.
        pytest.param("paid", -334, 0, 1, id="negative-total"),
    ],
)
def test_amount_over_the_creditable_amount_is_refused(
    status: str, total: int, already_credited: int, amount: int
) -> None:
    with pytest.raises(BadRequest) as caught:
        plan_credit_note(invoice(status, total, already_credited=already_credited), amount)
    assert caught.value.field == "amount"


@pytest.mark.parametrize("amount", [0, -100])
def test_amount_must_be_positive(amount: int) -> None:
    with pytest.raises(BadRequest) as caught:
        plan_credit_note(invoice("paid"), amount)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    ("total", "already_credited", "creditable"),
    [
        pytest.param(3000, 0, 3000, id="untouched"),
        pytest.param(3000, 1000, 2000, id="earlier-notes"),
        pytest.param(3000, 3000, 0, id="fully-credited"),
        pytest.param(-334, 0, 0, id="negative-total"),
        pytest.param(0, 0, 0, id="zero-total"),
    ],
)
def test_creditable_amount(total: int, already_credited: int, creditable: int) -> None:
    assert creditable_amount(invoice("paid", total, already_credited=already_credited)) == creditable


def test_the_whole_remaining_creditable_amount_is_accepted() -> None:
    # 3000 total, 1000 already credited: exactly 2000 is allowed.
    plan = plan_credit_note(invoice("paid", 3000, already_credited=1000), 2000)
    assert plan == CreditNotePlan("post_payment", 2000, 0, 0, 2000, 0)


OPEN_CASES = [
    # Worked example: T 3000 finalized with 1000 credit (B -1000) -> amount_remaining 2000.
    # A 2500 note lowers amount_due by min(2500, 2000) = 2000 (the invoice is then paid)
    # and credits the excess 500 back to the balance.
    pytest.param(
        3000, 2000, 2500, CreditNotePlan("pre_payment", 2500, 2000, 0, 500, 0), id="excess-credited"
    ),
    # 500 on the same invoice: reduction 500, no credit.
    pytest.param(3000, 2000, 500, CreditNotePlan("pre_payment", 500, 500, 0, 0, 0), id="within-amount-due"),
    # Exactly the amount remaining: reduction 2000, no credit.
    pytest.param(
        3000, 2000, 2000, CreditNotePlan("pre_payment", 2000, 2000, 0, 0, 0), id="exactly-amount-due"
    ),
    # Open invoice with nothing paid: the whole 3000 is a reduction.
    pytest.param(3000, 3000, 3000, CreditNotePlan("pre_payment", 3000, 3000, 0, 0, 0), id="whole-invoice"),
]


@pytest.mark.parametrize(("total", "amount_remaining", "amount", "plan"), OPEN_CASES)
def test_open_invoice_note_lowers_amount_due(
    total: int, amount_remaining: int, amount: int, plan: CreditNotePlan
) -> None:
    assert plan_credit_note(invoice("open", total, amount_remaining), amount) == plan


def test_open_invoice_worked_example_from_finalization() -> None:
    # The amount remaining comes from §4.2: T 3000, B -1000 -> due 2000.
    finalized = apply_credit_balance(3000, -1000, 50)
    assert finalized.amount_due == 2000
    plan = plan_credit_note(invoice("open", 3000, finalized.amount_due), 2500)
    assert (plan.amount_due_reduction, plan.credit_amount) == (2000, 500)
    assert finalized.amount_due - plan.amount_due_reduction == 0  # never below 0: paid


@pytest.mark.parametrize("field", ["refund_amount", "credit_amount", "out_of_band_amount"])
@pytest.mark.parametrize("value", [0, 1000], ids=["zero", "full"])
def test_settlement_fields_refused_on_open_invoices(field: str, value: int) -> None:
    with pytest.raises(BadRequest) as caught:
        plan_credit_note(invoice("open"), 1000, **{field: value})
    assert caught.value.field == field


PAID_CASES = [
    # None given: all 1000 credited to the balance.
    pytest.param({}, CreditNotePlan("post_payment", 1000, 0, 0, 1000, 0), id="default-all-credit"),
    pytest.param(
        {"refund_amount": 600, "credit_amount": 400},
        CreditNotePlan("post_payment", 1000, 0, 600, 400, 0),
        id="refund-and-credit",
    ),
    pytest.param(
        {"refund_amount": 1000}, CreditNotePlan("post_payment", 1000, 0, 1000, 0, 0), id="refund-only"
    ),
    pytest.param(
        {"out_of_band_amount": 1000},
        CreditNotePlan("post_payment", 1000, 0, 0, 0, 1000),
        id="out-of-band-only",
    ),
    pytest.param(
        {"refund_amount": 200, "credit_amount": 300, "out_of_band_amount": 500},
        CreditNotePlan("post_payment", 1000, 0, 200, 300, 500),
        id="all-three",
    ),
    pytest.param(
        {"refund_amount": 0, "credit_amount": 1000},
        CreditNotePlan("post_payment", 1000, 0, 0, 1000, 0),
        id="explicit-zero-refund",
    ),
]


@pytest.mark.parametrize(("settlement", "plan"), PAID_CASES)
def test_paid_invoice_settlement(settlement: dict[str, int], plan: CreditNotePlan) -> None:
    assert plan_credit_note(invoice("paid"), 1000, **settlement) == plan


@pytest.mark.parametrize(
    "settlement",
    [
        pytest.param({"refund_amount": 600, "credit_amount": 300}, id="short-by-100"),
        pytest.param({"refund_amount": 600, "credit_amount": 500}, id="over-by-100"),
        pytest.param({"refund_amount": 500}, id="refund-only-partial"),
        pytest.param({"credit_amount": 0}, id="explicit-zero-credit"),
        pytest.param({"out_of_band_amount": 1001}, id="out-of-band-over"),
    ],
)
def test_paid_invoice_settlement_must_equal_amount(settlement: dict[str, int]) -> None:
    with pytest.raises(BadRequest) as caught:
        plan_credit_note(invoice("paid"), 1000, **settlement)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    ("number", "ordinal", "expected"),
    [
        pytest.param("ACME-0001", 1, "ACME-0001-CN-01", id="first"),
        pytest.param("ACME-0001", 12, "ACME-0001-CN-12", id="twelfth"),
        pytest.param("ACME-10000", 100, "ACME-10000-CN-100", id="past-two-digits"),
    ],
)
def test_credit_note_number(number: str, ordinal: int, expected: str) -> None:
    assert credit_note_number(number, ordinal) == expected


def test_an_issued_note_on_an_open_invoice_is_voided() -> None:
    voided = void_note("cn_TEST", "issued", "in_TEST", "open")
    assert voided == "void"
    assert isinstance(voided, CreditNoteStatus)


def test_a_void_note_is_not_voided_again() -> None:
    with pytest.raises(WrongState) as caught:
        void_note("cn_TEST", "void", "in_TEST", "open")
    assert caught.value.field == "credit_note"
    assert caught.value.message == "credit note cn_TEST is already void"


@pytest.mark.parametrize("status", ["draft", "paid", "void", "uncollectible"])
def test_notes_are_voided_only_on_open_invoices(status: str) -> None:
    with pytest.raises(WrongState) as caught:
        void_note("cn_TEST", "issued", "in_TEST", status)
    assert caught.value.field == "credit_note"
    assert caught.value.message == (
        f"invoice in_TEST is {status}; credit notes can be voided only on open invoices"
    )


# Stripe's amounts on a note (domain/README.md §7: a note carries its share of the invoice's
# discounts and taxes)

VAT_EXCLUSIVE = TaxAmount("txr_vat", 90, 1800, False)
TEN_OFF = DiscountAmount("TEN", 200)


def test_a_note_of_the_whole_total_repeats_the_invoice_figures() -> None:
    """§4.1: 2000 with 10 % off and 5 % exclusive tax -> discount 200, tax 90, total 1890."""
    amounts = note_amounts(1890, 1890, [TEN_OFF], [VAT_EXCLUSIVE])
    assert amounts == NoteAmounts(
        subtotal=2000,
        subtotal_excluding_tax=2000,
        total=1890,
        total_excluding_tax=1800,
        discount_amounts=(TEN_OFF,),
        total_taxes=(VAT_EXCLUSIVE,),
    )
    assert amounts.discount_amount == 200


def test_a_third_of_the_total_carries_a_third_of_each_discount_and_tax() -> None:
    amounts = note_amounts(630, 1890, [TEN_OFF], [VAT_EXCLUSIVE])
    assert amounts.discount_amounts == (DiscountAmount("TEN", 67),)  # 66.67 half up
    assert amounts.total_taxes == (TaxAmount("txr_vat", 30, 600, False),)
    assert (amounts.total, amounts.total_excluding_tax, amounts.subtotal, amounts.subtotal_excluding_tax) == (
        630,
        600,
        667,  # 630 - 30 of exclusive tax + 67 of discount
        667,
    )


def test_inclusive_tax_is_inside_the_subtotal_but_not_inside_subtotal_excluding_tax() -> None:
    """§6: 10000 at 10 % inclusive -> tax 909; half of it credited: 5000, of which 455 tax."""
    amounts = note_amounts(5000, 10000, [], [TaxAmount("txr_incl", 909, 9091, True)])
    assert amounts.total_taxes == (TaxAmount("txr_incl", 455, 4546, True),)
    assert (amounts.subtotal, amounts.subtotal_excluding_tax, amounts.total, amounts.total_excluding_tax) == (
        5000,
        4545,
        5000,
        4545,
    )
    assert (amounts.discount_amount, amounts.discount_amounts) == (0, ())


def test_pre_and_post_payment_split_the_amount_at_the_amount_due() -> None:
    """§7: 3000 invoice, 1000 of it paid by credit balance (2000 due), a note of 2500 -> 2000
    lowers the amount due, 500 goes back to the balance."""
    plan = plan_credit_note(invoice("open", amount_remaining=2000), 2500)
    assert pre_and_post_payment(plan.amount, plan.amount_due_reduction) == (2000, 500)
    paid = plan_credit_note(invoice("paid"), 1200, refund_amount=1200)
    assert pre_and_post_payment(paid.amount, paid.amount_due_reduction) == (0, 1200)
