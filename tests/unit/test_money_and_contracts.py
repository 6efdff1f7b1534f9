"""Money checks, payload contracts and object ids (domain/README.md §1-§7 field rules)."""

from __future__ import annotations

import re
import time
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from domain.currencies import CURRENCIES, Currency
from domain.errors import BadRequest
from domain.money import MAX_AMOUNT, check_amount, check_currency, format_amount, round_half_up
from tasks.contracts import (
    Contract,
    CouponCreate,
    CreditNoteCreate,
    CustomerCreate,
    CustomerUpdate,
    InvoiceCreate,
    InvoiceItemCreate,
    InvoiceItemsCreate,
    TaxRateCreate,
    parse,
)
from tasks.ids import PREFIXES, derived_id, new_id, object_type

# --------------------------------------------------------------------------------------
# check_amount
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool-true"),
        pytest.param(False, id="bool-false"),
        pytest.param(10.0, id="whole-float"),
        pytest.param(10.5, id="float"),
        pytest.param("1000", id="string"),
        pytest.param(None, id="none"),
        pytest.param(Decimal(1000), id="decimal"),
        pytest.param(MAX_AMOUNT + 1, id="over-max"),
        pytest.param(-MAX_AMOUNT - 1, id="under-min"),
        pytest.param(10**12, id="far-over-max"),
    ],
)
def test_check_amount_refuses(value: object) -> None:
    with pytest.raises(BadRequest) as caught:
        check_amount(value)
    assert caught.value.field == "amount"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(99_999_999, id="upper-bound"),
        pytest.param(-99_999_999, id="lower-bound"),
        pytest.param(0, id="zero"),
        pytest.param(1, id="one"),
        pytest.param(-1, id="minus-one"),
    ],
)
def test_check_amount_accepts(value: int) -> None:
    assert check_amount(value) == value


def test_max_amount_is_stripes_limit() -> None:
    assert MAX_AMOUNT == 99_999_999


def test_check_amount_names_the_given_field() -> None:
    with pytest.raises(BadRequest) as caught:
        check_amount(1.5, "lines[2].amount")
    assert caught.value.field == "lines[2].amount"


@pytest.mark.parametrize(
    ("value", "minimum", "ok"),
    [
        pytest.param(0, 0, True, id="min0-accepts-0"),
        pytest.param(-1, 0, False, id="min0-refuses-minus-1"),
        pytest.param(1, 1, True, id="min1-accepts-1"),
        pytest.param(0, 1, False, id="min1-refuses-0"),
    ],
)
def test_check_amount_minimum(value: int, minimum: int, ok: bool) -> None:
    if ok:
        assert check_amount(value, minimum=minimum) == value
    else:
        with pytest.raises(BadRequest) as caught:
            check_amount(value, minimum=minimum)
        assert caught.value.field == "amount"


@pytest.mark.parametrize(
    ("value", "currency", "ok"),
    [
        # kwd is three-decimal and settles in steps of 10.
        pytest.param(1230, "kwd", True, id="kwd-multiple-of-10"),
        pytest.param(1235, "kwd", False, id="kwd-not-multiple-of-10"),
        pytest.param(-1230, "kwd", True, id="kwd-negative-multiple"),
        pytest.param(1, "kwd", False, id="kwd-one"),
        pytest.param(1235, "bhd", False, id="bhd-not-multiple-of-10"),
        # isk keeps two decimals that are always 00: steps of 100.
        pytest.param(1200, "isk", True, id="isk-multiple-of-100"),
        pytest.param(1250, "isk", False, id="isk-not-multiple-of-100"),
        pytest.param(1235, "usd", True, id="usd-any"),
        pytest.param(1235, "jpy", True, id="jpy-any"),
    ],
)
def test_check_amount_currency_step(value: int, currency: str, ok: bool) -> None:
    if ok:
        assert check_amount(value, currency=currency) == value
    else:
        with pytest.raises(BadRequest) as caught:
            check_amount(value, currency=currency)
        assert caught.value.field == "amount"


# --------------------------------------------------------------------------------------
# check_currency, currency table, rounding, formatting
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "mentions_lowercase"),
    [
        pytest.param("USD", True, id="uppercase"),
        pytest.param("Eur", True, id="mixed-case"),
        pytest.param("xyz", False, id="unknown"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
        pytest.param(840, False, id="numeric-code"),
        pytest.param("usd ", False, id="trailing-space"),
    ],
)
def test_check_currency_refuses(code: object, mentions_lowercase: bool) -> None:
    with pytest.raises(BadRequest) as caught:
        check_currency(code)
    assert caught.value.field == "currency"
    assert ("lowercase" in caught.value.message) is mentions_lowercase


def test_check_currency_names_the_given_field() -> None:
    with pytest.raises(BadRequest) as caught:
        check_currency("USD", field="currency_options")
    assert caught.value.field == "currency_options"


@pytest.mark.parametrize(
    ("code", "currency"),
    [
        pytest.param("usd", Currency("usd", 2, 50, 1), id="usd"),
        pytest.param("jpy", Currency("jpy", 0, 50, 1), id="jpy"),
        pytest.param("kwd", Currency("kwd", 3, 0, 10), id="kwd"),
        pytest.param("gbp", Currency("gbp", 2, 30, 1), id="gbp"),
        pytest.param("eur", Currency("eur", 2, 50, 1), id="eur"),
        pytest.param("cad", Currency("cad", 2, 50, 1), id="cad"),
    ],
)
def test_check_currency_accepts(code: str, currency: Currency) -> None:
    assert check_currency(code) == currency


def test_currency_table_is_lowercase_three_letters() -> None:
    assert all(re.fullmatch(r"[a-z]{3}", code) for code in CURRENCIES)
    assert all(c.code == code for code, c in CURRENCIES.items())


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        pytest.param("0.5", 1, id="half-up"),
        pytest.param("-0.5", -1, id="minus-half-away-from-zero"),
        pytest.param("2.5", 3, id="two-and-a-half"),
        pytest.param("-2.5", -3, id="minus-two-and-a-half"),
        pytest.param("1.49", 1, id="below-half"),
        pytest.param("22.5", 23, id="spec-22.5"),
        pytest.param("909.0909", 909, id="spec-909"),
    ],
)
def test_round_half_up(value: str, rounded: int) -> None:
    assert round_half_up(Decimal(value)) == rounded


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        pytest.param(123456, "usd", "1234.56 USD", id="usd"),
        pytest.param(5, "usd", "0.05 USD", id="usd-cents"),
        pytest.param(0, "usd", "0.00 USD", id="usd-zero"),
        pytest.param(-1050, "usd", "-10.50 USD", id="usd-negative"),
        pytest.param(-5, "usd", "-0.05 USD", id="usd-negative-cents"),
        pytest.param(500, "jpy", "500 JPY", id="jpy"),
        pytest.param(-500, "jpy", "-500 JPY", id="jpy-negative"),
        pytest.param(1230, "kwd", "1.230 KWD", id="kwd"),
        pytest.param(10, "kwd", "0.010 KWD", id="kwd-small"),
    ],
)
def test_format_amount(amount: int, currency: str, text: str) -> None:
    assert format_amount(amount, currency) == text


# --------------------------------------------------------------------------------------
# Payload contracts: a bad payload raises BadRequest naming the exact field.
# --------------------------------------------------------------------------------------


def item(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "ii_1",
        "customer": "cus_1",
        "currency": "usd",
        "amount": 1000,
        "idempotency_key": "key-1",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not ...}


def items_batch(bad_index: int, **changes: Any) -> dict[str, Any]:
    items = [item(id=f"ii_{i}") for i in range(5)]
    items[bad_index] = item(id=f"ii_{bad_index}", **changes)
    return {"items": items, "idempotency_key": "batch-1"}


def coupon(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": "SUMMER", "percent_off": "10", "idempotency_key": "key-1"}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not ...}


def invoice(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": "in_1", "customer": "cus_1", "idempotency_key": "key-1"}
    payload.update(changes)
    return payload


def customer(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": "cus_1", "email": "a@example.com", "idempotency_key": "key-1"}
    payload.update(changes)
    return payload


def credit_note(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": "cn_1", "invoice": "in_1", "idempotency_key": "key-1"}
    payload.update(changes)
    return payload


def tax_rate(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "txr_1",
        "display_name": "VAT",
        "percentage": "20",
        "inclusive": False,
        "idempotency_key": "key-1",
    }
    payload.update(changes)
    return payload


def custom_line(amount: int) -> dict[str, Any]:
    return {"type": "custom_line_item", "amount": amount, "description": "refund"}


METADATA_51 = {f"k{i}": "v" for i in range(51)}

BAD_PAYLOADS = [
    pytest.param(InvoiceItemCreate, item(amount=10.0), "amount", id="item-float-amount"),
    pytest.param(InvoiceItemCreate, item(amount=True), "amount", id="item-bool-amount"),
    pytest.param(InvoiceItemCreate, item(amount="1000"), "amount", id="item-string-amount"),
    pytest.param(InvoiceItemCreate, item(amount=MAX_AMOUNT + 1), "amount", id="item-amount-over-max"),
    pytest.param(
        InvoiceItemsCreate, items_batch(3, amount=12.5), "items[3].amount", id="batch-item-3-amount"
    ),
    pytest.param(
        InvoiceItemsCreate, items_batch(0, customer=...), "items[0].customer", id="batch-item-0-customer"
    ),
    pytest.param(InvoiceItemCreate, item(colour="red"), "colour", id="unknown-parameter"),
    pytest.param(InvoiceItemCreate, item(unitAmount=100), "unitAmount", id="unknown-camel-case-parameter"),
    pytest.param(InvoiceItemCreate, item(customer=...), "customer", id="missing-customer"),
    pytest.param(InvoiceItemCreate, item(unit_amount=500), "amount", id="amount-and-unit-amount"),
    pytest.param(InvoiceItemCreate, item(amount=...), "amount", id="neither-amount-nor-unit-amount"),
    pytest.param(InvoiceItemCreate, item(currency="USD"), "currency", id="uppercase-currency"),
    pytest.param(
        InvoiceItemCreate, item(period={"start": 200, "end": 100}), "period.end", id="period-reversed"
    ),
    pytest.param(InvoiceItemCreate, item(metadata=METADATA_51), "metadata", id="metadata-51-keys"),
    pytest.param(InvoiceItemCreate, item(metadata={"k" * 41: "v"}), "metadata", id="metadata-41-char-key"),
    pytest.param(InvoiceItemCreate, item(metadata={"k": 1}), "metadata", id="metadata-non-string-value"),
    pytest.param(
        InvoiceItemCreate, item(metadata={"k": "v" * 501}), "metadata", id="metadata-501-char-value"
    ),
    pytest.param(
        CouponCreate, coupon(percent_off=..., amount_off=500), "currency", id="amount-off-no-currency"
    ),
    pytest.param(CouponCreate, coupon(percent_off="0"), "percent_off", id="percent-off-zero"),
    pytest.param(CouponCreate, coupon(percent_off=0), "percent_off", id="percent-off-int-zero"),
    pytest.param(CouponCreate, coupon(percent_off="101"), "percent_off", id="percent-off-101"),
    pytest.param(CouponCreate, coupon(percent_off=...), "percent_off", id="neither-percent-nor-amount"),
    pytest.param(
        CouponCreate,
        coupon(amount_off=500, currency="usd"),
        "percent_off",
        id="both-percent-and-amount",
    ),
    pytest.param(CouponCreate, coupon(duration="repeating"), "duration_in_months", id="repeating-no-months"),
    pytest.param(
        CouponCreate,
        coupon(duration="once", duration_in_months=3),
        "duration_in_months",
        id="months-without-repeating",
    ),
    pytest.param(
        InvoiceCreate,
        invoice(collection_method="send_invoice"),
        "days_until_due",
        id="send-invoice-without-days-until-due",
    ),
    pytest.param(
        InvoiceCreate,
        invoice(days_until_due=30),
        "days_until_due",
        id="days-until-due-with-charge-automatically",
    ),
    pytest.param(
        InvoiceCreate, invoice(due_date=1_700_000_000), "due_date", id="due-date-with-charge-automatically"
    ),
    pytest.param(
        InvoiceItemCreate,
        item(tax_rates=[f"txr_{i}" for i in range(6)]),
        "tax_rates",
        id="six-tax-rates-on-a-line",
    ),
    pytest.param(CustomerCreate, customer(invoice_prefix="acme"), "invoice_prefix", id="prefix-lowercase"),
    pytest.param(CustomerCreate, customer(invoice_prefix=""), "invoice_prefix", id="prefix-empty"),
    pytest.param(
        CustomerCreate, customer(invoice_prefix="ABCDEFGHIJKLM"), "invoice_prefix", id="prefix-13-chars"
    ),
    pytest.param(
        CustomerCreate,
        customer(tax_id_data=[{"type": "xx_nope", "value": "123"}]),
        "tax_id_data[0].type",
        id="tax-id-type-unknown",
    ),
    pytest.param(
        CustomerCreate,
        customer(tax_id_data=[{"type": "eu_vat", "value": f"DE{i}"} for i in range(6)]),
        "tax_id_data",
        id="six-tax-ids",
    ),
    # Stripe's address fields line1/line2 contain a digit: the error must still name them.
    pytest.param(CustomerCreate, customer(address={"line1": "x" * 501}), "address.line1", id="address-line1"),
    pytest.param(CustomerCreate, customer(address={"line2": 5}), "address.line2", id="address-line2"),
    pytest.param(
        CustomerCreate, customer(address={"country": "de"}), "address.country", id="address-country"
    ),
    pytest.param(
        CustomerUpdate,
        {"customer": "cus_1", "metadata": METADATA_51, "idempotency_key": "k"},
        "metadata",
        id="customer-update-metadata-51-keys",
    ),
    pytest.param(
        CreditNoteCreate,
        credit_note(amount=1000, lines=[custom_line(600), custom_line(300)]),
        "amount",
        id="credit-note-lines-sum-differs",
    ),
    pytest.param(CreditNoteCreate, credit_note(), "amount", id="credit-note-neither-amount-nor-lines"),
    pytest.param(TaxRateCreate, tax_rate(percentage="8.12345"), "percentage", id="percentage-5-decimals"),
    pytest.param(TaxRateCreate, tax_rate(percentage="NaN"), "percentage", id="percentage-nan-string"),
    pytest.param(TaxRateCreate, tax_rate(percentage=float("nan")), "percentage", id="percentage-nan-float"),
    pytest.param(TaxRateCreate, tax_rate(percentage=float("inf")), "percentage", id="percentage-inf-float"),
    pytest.param(TaxRateCreate, tax_rate(percentage="Infinity"), "percentage", id="percentage-inf-string"),
    pytest.param(TaxRateCreate, tax_rate(percentage="-1"), "percentage", id="percentage-negative"),
    pytest.param(TaxRateCreate, tax_rate(percentage="100.01"), "percentage", id="percentage-over-100"),
    pytest.param(TaxRateCreate, tax_rate(percentage=True), "percentage", id="percentage-bool"),
]


@pytest.mark.parametrize(("model", "payload", "field"), BAD_PAYLOADS)
def test_bad_payload_names_the_field(model: type[Contract], payload: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(model, payload)
    assert caught.value.field == field


def test_unknown_parameter_message() -> None:
    with pytest.raises(BadRequest) as caught:
        parse(InvoiceItemCreate, item(colour="red"))
    assert (caught.value.field, caught.value.message) == ("colour", "unknown parameter")


def test_missing_parameter_message() -> None:
    with pytest.raises(BadRequest) as caught:
        parse(InvoiceItemCreate, item(customer=...))
    assert (caught.value.field, caught.value.message) == ("customer", "required parameter is missing")


def test_payload_must_be_an_object() -> None:
    with pytest.raises(BadRequest) as caught:
        parse(InvoiceItemCreate, ["not", "an", "object"])  # type: ignore[arg-type]
    assert caught.value.field is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("8.25", "8.25", id="string"),
        pytest.param(8.25, "8.25", id="float"),
        pytest.param("8.2500", "8.25", id="trailing-zeros"),
        pytest.param("8.1234", "8.1234", id="four-decimals"),
        pytest.param(20, "20", id="int"),
        pytest.param("100.0", "100", id="hundred"),
        pytest.param("0", "0", id="zero"),
    ],
)
def test_tax_rate_percentage_parses(given: object, stored: str) -> None:
    parsed = parse(TaxRateCreate, tax_rate(percentage=given))
    assert isinstance(parsed, TaxRateCreate)
    assert parsed.percentage == stored


@pytest.mark.parametrize(
    ("payload", "line_amount"),
    [
        pytest.param(item(amount=-800), -800, id="negative-amount"),
        pytest.param(item(amount=..., unit_amount=250, quantity=4), 1000, id="unit-amount-times-quantity"),
        pytest.param(item(amount=MAX_AMOUNT), MAX_AMOUNT, id="max-amount"),
        pytest.param(item(amount=-MAX_AMOUNT), -MAX_AMOUNT, id="min-amount"),
    ],
)
def test_item_line_amount(payload: dict[str, Any], line_amount: int) -> None:
    parsed = parse(InvoiceItemCreate, payload)
    assert isinstance(parsed, InvoiceItemCreate)
    assert parsed.line_amount == line_amount


def test_metadata_limits_accepted() -> None:
    metadata = {f"{i:0>40}": "v" * 500 for i in range(50)}  # 50 keys of 40 chars, 500-char values
    parsed = parse(InvoiceItemCreate, item(metadata=metadata))
    assert isinstance(parsed, InvoiceItemCreate)
    assert parsed.metadata == metadata


def test_good_coupon_parses() -> None:
    parsed = parse(
        CouponCreate,
        coupon(
            percent_off=...,
            amount_off=500,
            currency="usd",
            currency_options={"eur": {"amount_off": 450}},
            duration="repeating",
            duration_in_months=3,
        ),
    )
    assert isinstance(parsed, CouponCreate)
    assert (parsed.amount_off, parsed.currency, parsed.duration_in_months) == (500, "usd", 3)
    assert parsed.currency_options is not None
    assert parsed.currency_options["eur"].amount_off == 450


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("100", "100", id="hundred"),
        pytest.param("0.0001", "0.0001", id="smallest"),
        pytest.param(12.5, "12.5", id="float"),
    ],
)
def test_coupon_percent_off_bounds_accepted(given: object, stored: str) -> None:
    parsed = parse(CouponCreate, coupon(percent_off=given))
    assert isinstance(parsed, CouponCreate)
    assert parsed.percent_off == stored


def test_credit_note_lines_give_the_amount() -> None:
    parsed = parse(CreditNoteCreate, credit_note(lines=[custom_line(600), custom_line(400)]))
    assert isinstance(parsed, CreditNoteCreate)
    assert parsed.note_amount == 1000


def test_send_invoice_with_days_until_due_parses() -> None:
    parsed = parse(InvoiceCreate, invoice(collection_method="send_invoice", days_until_due=30))
    assert isinstance(parsed, InvoiceCreate)
    assert (parsed.collection_method, parsed.days_until_due, parsed.request_key) == (
        "send_invoice",
        30,
        "key-1",
    )


# --------------------------------------------------------------------------------------
# Object ids
# --------------------------------------------------------------------------------------

CROCKFORD = "[0-9A-HJKMNP-TV-Z]"


def test_new_id_strictly_increasing() -> None:
    ids = [new_id("ii") for _ in range(10_000)]
    assert all(a < b for a, b in pairwise(ids))
    assert all(re.fullmatch(rf"ii_{CROCKFORD}{{26}}", i) for i in ids)


def test_new_ids_are_the_next_ids_in_order_even_across_their_shared_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks import ids

    # a last id 3 below a multiple of 2**20, in the future: the batch's head changes after 2 ids
    last = ((time.time_ns() // 1_000_000 + 60_000) << 80) | ((1 << 40) - 3)
    monkeypatch.setattr(ids, "_last", last)
    batch = ids.new_ids("ii", 8)
    assert batch == [f"ii_{ids._encode(v, 26)}" for v in range(last + 1, last + 9)]
    assert batch[1][:25] != batch[2][:25]
    assert new_id("ii") > batch[-1]
    parse(InvoiceItemCreate, item(id=batch[0], customer=new_id("cus")))


def test_new_id_passes_the_contract_id_pattern() -> None:
    parsed = parse(InvoiceItemCreate, item(id=new_id("ii"), customer=new_id("cus")))
    assert isinstance(parsed, InvoiceItemCreate)


def test_derived_id_is_deterministic_and_prefixed() -> None:
    first = derived_id("in", "order-42")
    assert first == derived_id("in", "order-42")
    assert re.fullmatch(rf"in_{CROCKFORD}{{26}}", first)
    assert derived_id("in", "order-43") != first
    other_prefix = derived_id("cus", "order-42")
    assert other_prefix.startswith("cus_")
    assert other_prefix.removeprefix("cus_") != first.removeprefix("in_")


@pytest.mark.parametrize(
    ("object_id", "kind"),
    [
        *(pytest.param(f"{prefix}_01ABC", name, id=name) for name, prefix in PREFIXES.items()),
        pytest.param("foo_01ABC", None, id="unknown-prefix"),
        pytest.param("cus01ABC", None, id="no-underscore"),
        pytest.param("", None, id="empty"),
    ],
)
def test_object_type(object_id: str, kind: str | None) -> None:
    assert object_type(object_id) == kind


def test_object_type_of_generated_ids() -> None:
    assert object_type(new_id("cbtxn")) == "customer_balance_transaction"
    assert object_type(derived_id("txr", "vat")) == "tax_rate"


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (
            InvoiceItemCreate,
            {"id": "ii_1", "customer": "cus_1", "amount": 1100, "tax_rates": ["txr_G", "txr_G"]},
            "tax_rates",
        ),
        (
            InvoiceCreate,
            {"id": "in_1", "customer": "cus_1", "default_tax_rates": ["txr_A", "txr_B", "txr_A"]},
            "default_tax_rates",
        ),
    ],
    ids=["item", "invoice-default"],
)
def test_a_tax_rate_listed_twice_is_refused(model: type, payload: dict, field: str) -> None:
    # A repeated rate would tax the line twice (found by the ledger checker).
    with pytest.raises(BadRequest) as error:
        parse(model, {**payload, "idempotency_key": "k"})
    assert error.value.field == field
    assert "listed twice" in error.value.message
