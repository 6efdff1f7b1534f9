"""Payload contracts: what each task accepts, in Stripe's parameter names.

The producer validates with these before sending, and the worker validates again on
receipt (a message may come from anywhere). Both sides use the same models, so a bad
payload fails in the caller's process with the same typed error the worker would
record. Imports neither the database nor the worker.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from domain.errors import BadRequest
from domain.locales import MAX_TAG_LENGTH, well_formed
from domain.money import MAX_AMOUNT, check_currency
from domain.periods import MAX_INTERVAL_COUNT
from tasks.ids import PREFIXES

MAX_ITEMS_PER_BATCH = 1000
MAX_METADATA_KEYS = 50


def _strict_int(value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a float" if isinstance(value, float) else f"{type(value).__name__} {value!r}"
        raise ValueError(f"must be an integer number of minor units, not {kind}")
    if not low <= value <= high:
        raise ValueError(f"must be between {low:,} and {high:,} (got {value:,})")
    return value


def _minor_units(low: int) -> PlainValidator:
    return PlainValidator(lambda v: _strict_int(v, low=low, high=MAX_AMOUNT))


def _minor_units_schema(low: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer", "minimum": low, "maximum": MAX_AMOUNT})


SignedAmount = Annotated[int, _minor_units(-MAX_AMOUNT), _minor_units_schema(-MAX_AMOUNT)]
PositiveAmount = Annotated[int, _minor_units(1), _minor_units_schema(1)]
NonNegativeAmount = Annotated[int, _minor_units(0), _minor_units_schema(0)]


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer (got {type(value).__name__} {value!r})")
    if not 1 <= value <= 1_000_000:
        raise ValueError(f"must be between 1 and 1,000,000 (got {value})")
    return value


Count = Annotated[int, PlainValidator(_count), WithJsonSchema({"type": "integer", "minimum": 1})]


def _currency(value: object) -> str:
    try:
        return check_currency(value).code
    except BadRequest as exc:
        raise ValueError(exc.message) from None


CurrencyCode = Annotated[
    str, PlainValidator(_currency), WithJsonSchema({"type": "string", "pattern": "^[a-z]{3}$"})
]


def _percentage(value: object, *, low_exclusive: bool) -> str:
    """Percentages travel as decimal strings; a float is accepted only via its shortest repr."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a decimal number such as '8.25' (got {type(value).__name__})")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ValueError(f"must be a decimal number such as '8.25' (got {value!r})") from None
    exponent = number.as_tuple().exponent  # a letter for NaN and the infinities
    if not isinstance(exponent, int) or exponent < -4:
        raise ValueError(f"must be a finite number with at most 4 decimals (got {value!r})")
    if number > 100 or number < 0 or (low_exclusive and number == 0):
        raise ValueError(
            f"must be {'above' if low_exclusive else 'at least'} 0 and at most 100 (got {value!r})"
        )
    return format(number.normalize(), "f")


TaxPercentage = Annotated[str, PlainValidator(lambda v: _percentage(v, low_exclusive=False))]
PercentOff = Annotated[str, PlainValidator(lambda v: _percentage(v, low_exclusive=True))]


def _id_of(kind: str) -> StringConstraints:
    prefix = PREFIXES[kind]
    return StringConstraints(pattern=rf"^{prefix}_[0-9A-Za-z]{{1,60}}$", max_length=64)


CustomerId = Annotated[str, _id_of("customer")]
InvoiceId = Annotated[str, _id_of("invoice")]
InvoiceItemId = Annotated[str, _id_of("invoice_item")]
CreditNoteId = Annotated[str, _id_of("credit_note")]
BalanceTransactionId = Annotated[str, _id_of("customer_balance_transaction")]
TaxRateId = Annotated[str, _id_of("tax_rate")]
ProductId = Annotated[str, _id_of("product")]
PriceId = Annotated[str, _id_of("price")]
SubscriptionId = Annotated[str, _id_of("subscription")]
TestClockId = Annotated[str, _id_of("test_clock")]


def _distinct(ids: list[str]) -> list[str]:
    """A rate named twice would tax the line twice: refuse it."""
    for index, rate in enumerate(ids):
        if rate in ids[:index]:
            raise ValueError(f"tax rate {rate} is listed twice (position {index})")
    return ids


TaxRates = Annotated[list[TaxRateId], Field(max_length=5), AfterValidator(_distinct)]
CouponId = Annotated[str, Field(pattern=r"^[0-9A-Za-z_\-]{1,64}$")]
IdempotencyKeyStr = Annotated[str, Field(min_length=1, max_length=255)]
Timestamp = Annotated[int, Field(ge=0, le=253_402_300_799, strict=True)]
ShortText = Annotated[str, Field(max_length=500)]
LongText = Annotated[str, Field(max_length=5000)]


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("must be an object of string keys to string values")
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} keys (got {len(value)})")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 40 or "[" in key or "]" in key:
            raise ValueError(f"key {key!r} must be 1-40 characters without square brackets")
        if not isinstance(item, str) or len(item) > 500:
            raise ValueError(f"value of {key!r} must be a string of at most 500 characters")
    return dict(value)


Metadata = Annotated[dict[str, str], PlainValidator(_metadata), WithJsonSchema({"type": "object"})]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    @property
    def request_key(self) -> str:
        """The idempotency key a request is stored under: its ``idempotency_key`` (a chained
        invoice's later parts say otherwise). Only requests have one."""
        key = self.__dict__.get("idempotency_key")
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__} is not a request: it has no idempotency_key")
        return key


class Address(Contract):
    line1: ShortText | None = None
    line2: ShortText | None = None
    city: ShortText | None = None
    state: ShortText | None = None
    postal_code: Annotated[str, Field(max_length=20)] | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None


class Shipping(Contract):
    name: ShortText
    address: Address
    phone: Annotated[str, Field(max_length=32)] | None = None


TAX_ID_TYPES = frozenset(
    [
        "ad_nrt",
        "ae_trn",
        "ar_cuit",
        "au_abn",
        "au_arn",
        "bg_uic",
        "bh_vat",
        "bo_tin",
        "br_cnpj",
        "br_cpf",
        "ca_bn",
        "ca_gst_hst",
        "ca_pst_bc",
        "ca_pst_mb",
        "ca_pst_sk",
        "ca_qst",
        "ch_uid",
        "ch_vat",
        "cl_tin",
        "cn_tin",
        "co_nit",
        "cr_tin",
        "de_stn",
        "do_rcn",
        "ec_ruc",
        "eg_tin",
        "es_cif",
        "eu_oss_vat",
        "eu_vat",
        "gb_vat",
        "ge_vat",
        "hk_br",
        "hr_oib",
        "hu_tin",
        "id_npwp",
        "il_vat",
        "in_gst",
        "is_vat",
        "jp_cn",
        "jp_rn",
        "jp_trn",
        "ke_pin",
        "kr_brn",
        "kz_bin",
        "li_uid",
        "li_vat",
        "mx_rfc",
        "my_frp",
        "my_itn",
        "my_sst",
        "ng_tin",
        "no_vat",
        "no_voec",
        "nz_gst",
        "om_vat",
        "pe_ruc",
        "ph_tin",
        "ro_tin",
        "rs_pib",
        "ru_inn",
        "ru_kpp",
        "sa_vat",
        "sg_gst",
        "sg_uen",
        "si_tin",
        "sv_nit",
        "th_vat",
        "tr_tin",
        "tw_vat",
        "ua_vat",
        "us_ein",
        "uy_ruc",
        "ve_rif",
        "vn_tin",
        "za_vat",
    ]
)


TAX_ID_FORMATS: dict[str, tuple[str, str]] = {
    # type: (pattern of the value, an example as Stripe's tax ID page gives it)
    "eu_vat": (
        r"(AT|BE|BG|CY|CZ|DE|DK|EE|EL|ES|FI|FR|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|SI|SK|XI)[0-9A-Z+*]{2,12}",
        "DE123456789",
    ),
    "gb_vat": (r"GB([0-9]{9}|[0-9]{12}|GD[0-9]{3}|HA[0-9]{3})", "GB123456789"),
    "us_ein": (r"[0-9]{2}-?[0-9]{7}", "12-3456789"),
    "ca_bn": (r"[0-9]{9}", "123456789"),
    "au_abn": (r"[0-9]{11}", "12345678912"),
    "jp_cn": (r"[0-9]{13}", "1234567891234"),
    "ch_vat": (r"CHE-?[0-9]{3}\.?[0-9]{3}\.?[0-9]{3} ?(MWST|TVA|IVA)", "CHE-123.456.789 MWST"),
    "in_gst": (r"[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][0-9A-Z]Z[0-9A-Z]", "12ABCDE3456FGZH"),
    "id_npwp": (
        r"[0-9]{2,3}\.?[0-9]{3}\.?[0-9]{3}\.?[0-9]-?[0-9]{3}\.?[0-9]{3}|[0-9]{16}",
        "012.345.678.9-012.345",
    ),
}
"""Formats checked for the most used tax ID types (Stripe refuses a value not in its type's
format); other types are checked for length only."""


class TaxIdData(Contract):
    type: str
    value: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TAX_ID_TYPES:
            raise ValueError(f"unknown tax id type {value!r}")
        return value

    @model_validator(mode="after")
    def _format(self) -> TaxIdData:
        known = TAX_ID_FORMATS.get(self.type)
        if known is not None and not re.fullmatch(known[0], self.value.upper()):
            raise ValueError(f"value: {self.value!r} is not a valid {self.type} (such as {known[1]!r})")
        return self


def _language_tag(value: object) -> str:
    if not isinstance(value, str) or not well_formed(value):
        raise ValueError(
            f"{value!r} is not a well-formed BCP 47 language tag (such as 'en', 'fr-CA', 'zh-Hant-TW')"
        )
    return value


Locale = Annotated[
    str, PlainValidator(_language_tag), WithJsonSchema({"type": "string", "maxLength": MAX_TAG_LENGTH})
]
"""A language tag as RFC 5646 (BCP 47) spells it (``domain.locales``), in the caller's case."""
TaxExempt = Literal["none", "exempt", "reverse"]


class InvoiceSettings(Contract):
    default_payment_method: Annotated[str, Field(max_length=64)] | None = None


class CustomerFields(Contract):
    email: Annotated[str, Field(max_length=512, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    description: LongText | None = None
    metadata: Metadata | None = None
    address: Address | None = None
    shipping: Shipping | None = None
    preferred_locales: Annotated[list[Locale], Field(max_length=10)] | None = None
    tax_exempt: TaxExempt | None = None
    currency: CurrencyCode | None = None
    invoice_prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,12}$")] | None = None
    invoice_settings: InvoiceSettings | None = None


class CustomerCreate(CustomerFields):
    id: CustomerId
    tax_id_data: Annotated[list[TaxIdData], Field(max_length=5)] | None = None
    test_clock: TestClockId | None = None
    """The customer lives at this test clock's time (sandbox billing)."""
    idempotency_key: IdempotencyKeyStr


class CustomerUpdate(CustomerFields):
    customer: CustomerId
    idempotency_key: IdempotencyKeyStr


class CustomerDelete(Contract):
    customer: CustomerId
    idempotency_key: IdempotencyKeyStr


class Period(Contract):
    start: Timestamp
    end: Timestamp

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError("end: must not be before start")
        return self


class InvoiceItemCreate(Contract):
    id: InvoiceItemId
    customer: CustomerId
    currency: CurrencyCode | None = None
    amount: SignedAmount | None = None
    unit_amount: SignedAmount | None = None
    quantity: Count | None = None
    description: LongText | None = None
    discountable: bool | None = None
    period: Period | None = None
    metadata: Metadata | None = None
    tax_rates: TaxRates | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _amount_or_unit_amount(self) -> InvoiceItemCreate:
        if self.amount is not None and self.unit_amount is not None:
            raise ValueError("amount: give either amount or unit_amount (with quantity), not both")
        if self.amount is None and self.unit_amount is None:
            raise ValueError("amount: amount or unit_amount is required")
        if self.amount is not None and self.quantity not in (None, 1):
            raise ValueError("quantity: goes with unit_amount; amount is already the line's total")
        if self.unit_amount is not None and abs(self.unit_amount * (self.quantity or 1)) > MAX_AMOUNT:
            raise ValueError(
                f"unit_amount: unit_amount times quantity must be at most {MAX_AMOUNT:,} in absolute value"
            )
        return self

    @property
    def line_amount(self) -> int:
        if self.amount is not None:
            return self.amount
        assert self.unit_amount is not None
        return self.unit_amount * (self.quantity or 1)


class InvoiceItemsCreate(Contract):
    """A batch of items, written in one transaction: all of them or none."""

    items: Annotated[list[InvoiceItemCreate], Field(min_length=1, max_length=MAX_ITEMS_PER_BATCH)]
    idempotency_key: IdempotencyKeyStr


class DiscountParam(Contract):
    coupon: CouponId


class InvoiceOptions(Contract):
    currency: CurrencyCode | None = None
    collection_method: Literal["charge_automatically", "send_invoice"] = "charge_automatically"
    days_until_due: Annotated[int, Field(ge=0, le=3650, strict=True)] | None = None
    due_date: Timestamp | None = None
    pending_invoice_items_behavior: Literal["include", "exclude"] = "include"
    auto_advance: bool | None = None
    description: LongText | None = None
    footer: LongText | None = None
    metadata: Metadata | None = None
    default_tax_rates: TaxRates | None = None
    discounts: Annotated[list[DiscountParam], Field(max_length=20)] | None = None
    finalize: bool = False
    """Finalize in the same transaction (number, snapshot, credit applied)."""

    @model_validator(mode="after")
    def _due(self) -> InvoiceOptions:
        due_params = [n for n in ("days_until_due", "due_date") if getattr(self, n) is not None]
        if self.collection_method == "send_invoice" and not due_params:
            raise ValueError("days_until_due: required (or due_date) with collection_method=send_invoice")
        if self.collection_method == "charge_automatically" and due_params:
            raise ValueError(f"{due_params[0]}: only for collection_method=send_invoice")
        if len(due_params) == 2:
            raise ValueError("due_date: give days_until_due or due_date, not both")
        return self


class InvoiceCreate(InvoiceOptions):
    id: InvoiceId
    customer: CustomerId
    idempotency_key: IdempotencyKeyStr
    part: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = 1
    """Position in a chain of invoices for one backlog; follow-ups are parts 2, 3, …"""

    @property
    def request_key(self) -> str:
        """The idempotency key of this part: the caller's key, then ``<key>:part<n>``."""
        return self.idempotency_key if self.part == 1 else f"{self.idempotency_key}:part{self.part}"


class InvoicePendingCreate(InvoiceOptions):
    """Invoice everything pending for a customer: one chain of invoices per currency."""

    customer: CustomerId
    idempotency_key: IdempotencyKeyStr


class InvoiceAction(Contract):
    invoice: InvoiceId
    idempotency_key: IdempotencyKeyStr


class InvoicePay(InvoiceAction):
    paid_out_of_band: Literal[True] = True


class CreditNoteLine(Contract):
    type: Literal["invoice_line_item", "custom_line_item"]
    invoice_line_item: InvoiceItemId | None = None
    amount: PositiveAmount
    description: ShortText | None = None

    @model_validator(mode="after")
    def _line_ref(self) -> CreditNoteLine:
        if (self.type == "invoice_line_item") != (self.invoice_line_item is not None):
            raise ValueError("invoice_line_item: required for, and only for, type=invoice_line_item")
        return self


class CreditNoteCreate(Contract):
    id: CreditNoteId
    invoice: InvoiceId
    amount: PositiveAmount | None = None
    lines: Annotated[list[CreditNoteLine], Field(min_length=1, max_length=250)] | None = None
    reason: Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory"] | None = None
    memo: LongText | None = None
    refund_amount: NonNegativeAmount | None = None
    credit_amount: NonNegativeAmount | None = None
    out_of_band_amount: NonNegativeAmount | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _amount_or_lines(self) -> CreditNoteCreate:
        if self.lines is not None:
            total = sum(line.amount for line in self.lines)
            if self.amount is not None and self.amount != total:
                raise ValueError(f"amount: {self.amount} differs from the sum of lines {total}")
        elif self.amount is None:
            raise ValueError("amount: amount or lines is required")
        return self

    @property
    def note_amount(self) -> int:
        return self.amount if self.amount is not None else sum(line.amount for line in self.lines or ())


class CreditNoteVoid(Contract):
    credit_note: CreditNoteId
    idempotency_key: IdempotencyKeyStr


class BalanceTransactionCreate(Contract):
    id: BalanceTransactionId
    customer: CustomerId
    amount: SignedAmount
    currency: CurrencyCode | None = None
    description: ShortText | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr

    @field_validator("amount")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class CurrencyOption(Contract):
    amount_off: PositiveAmount


class CouponCreate(Contract):
    id: CouponId
    name: Annotated[str, Field(max_length=40)] | None = None
    percent_off: PercentOff | None = None
    amount_off: PositiveAmount | None = None
    currency: CurrencyCode | None = None
    currency_options: dict[CurrencyCode, CurrencyOption] | None = None
    duration: Literal["once", "repeating", "forever"] = "once"
    duration_in_months: Annotated[int, Field(ge=1, le=1200, strict=True)] | None = None
    max_redemptions: Annotated[int, Field(ge=1, strict=True)] | None = None
    redeem_by: Timestamp | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _one_kind(self) -> CouponCreate:
        if (self.percent_off is None) == (self.amount_off is None):
            raise ValueError("percent_off: give exactly one of percent_off or amount_off")
        if self.amount_off is not None and self.currency is None:
            raise ValueError("currency: required with amount_off")
        if self.amount_off is None and (self.currency or self.currency_options):
            raise ValueError("currency: currency and currency_options go with amount_off only")
        if (self.duration == "repeating") != (self.duration_in_months is not None):
            raise ValueError("duration_in_months: required for, and only for, duration=repeating")
        return self


class CustomerDiscountCreate(Contract):
    customer: CustomerId
    coupon: CouponId
    idempotency_key: IdempotencyKeyStr


class CustomerDiscountDelete(Contract):
    customer: CustomerId
    idempotency_key: IdempotencyKeyStr


class TaxRateCreate(Contract):
    id: TaxRateId
    display_name: Annotated[str, Field(min_length=1, max_length=50)]
    percentage: TaxPercentage
    inclusive: bool
    active: bool = True
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    jurisdiction: Annotated[str, Field(max_length=64)] | None = None
    description: ShortText | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr


class ProductCreate(Contract):
    id: ProductId
    name: Annotated[str, Field(min_length=1, max_length=250)]
    description: LongText | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr


class Recurring(Contract):
    interval: Literal["day", "week", "month", "year"]
    interval_count: Annotated[int, Field(ge=1, strict=True)] = 1

    @model_validator(mode="after")
    def _at_most_a_year(self) -> Recurring:
        limit = MAX_INTERVAL_COUNT[self.interval]
        if self.interval_count > limit:
            raise ValueError(f"interval_count: at most one year ({limit} for interval={self.interval})")
        return self


class PriceCurrencyOption(Contract):
    unit_amount: NonNegativeAmount


class PriceCreate(Contract):
    id: PriceId
    product: ProductId
    currency: CurrencyCode
    unit_amount: NonNegativeAmount
    currency_options: Annotated[dict[CurrencyCode, PriceCurrencyOption], Field(max_length=50)] | None = None
    recurring: Recurring | None = None
    nickname: ShortText | None = None
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _options_are_other_currencies(self) -> PriceCreate:
        if self.currency_options and self.currency in self.currency_options:
            raise ValueError(f"currency_options: {self.currency} is the price's own currency")
        return self


class SubscriptionItemParam(Contract):
    price: PriceId
    quantity: Count = 1


class SubscriptionCreate(Contract):
    id: SubscriptionId
    customer: CustomerId
    items: Annotated[list[SubscriptionItemParam], Field(min_length=1, max_length=20)]
    currency: CurrencyCode | None = None
    billing_cycle_anchor: Timestamp | None = None
    collection_method: Literal["charge_automatically", "send_invoice"] = "charge_automatically"
    days_until_due: Annotated[int, Field(ge=0, le=3650, strict=True)] | None = None
    coupon: CouponId | None = None
    auto_advance: bool = True
    """Whether its cycle invoices are finalized an hour after they are made."""
    cancel_at_period_end: bool = False
    metadata: Metadata | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _due(self) -> SubscriptionCreate:
        if self.collection_method == "send_invoice" and self.days_until_due is None:
            raise ValueError("days_until_due: required with collection_method=send_invoice")
        if self.collection_method == "charge_automatically" and self.days_until_due is not None:
            raise ValueError("days_until_due: only for collection_method=send_invoice")
        return self


class SubscriptionCancel(Contract):
    subscription: SubscriptionId
    at_period_end: bool = False
    """False: cancel now. True: end when the current (already billed) period ends."""
    idempotency_key: IdempotencyKeyStr


class SubscriptionCurrencyChange(Contract):
    """Move every active subscription of the customer to ``currency`` at the next period boundary."""

    customer: CustomerId
    currency: CurrencyCode
    idempotency_key: IdempotencyKeyStr


class SubscriptionRenew(Contract):
    """Bill one period of a subscription (sent by beat and by the renewal before it)."""

    subscription: SubscriptionId
    period_start: Timestamp
    idempotency_key: IdempotencyKeyStr


class TestClockCreate(Contract):
    __test__ = False  # not a pytest class

    id: TestClockId
    frozen_time: Timestamp
    name: Annotated[str, Field(max_length=300)] | None = None
    idempotency_key: IdempotencyKeyStr


class TestClockAdvance(Contract):
    __test__ = False

    test_clock: TestClockId
    frozen_time: Timestamp
    idempotency_key: IdempotencyKeyStr


class DocumentRender(Contract):
    """Render and store the PDF of a finalized invoice or of a credit note, once. Sent through
    the outbox by the transaction that finalizes the invoice or creates the note."""

    invoice: InvoiceId | None = None
    credit_note: CreditNoteId | None = None
    idempotency_key: IdempotencyKeyStr

    @model_validator(mode="after")
    def _one_object(self) -> DocumentRender:
        if (self.invoice is None) == (self.credit_note is None):
            raise ValueError("invoice: give exactly one of invoice or credit_note")
        return self

    @property
    def object_id(self) -> str:
        object_id = self.invoice or self.credit_note
        assert object_id is not None
        return object_id


class DocumentEmail(DocumentRender):
    """Email a stored document to its customer (a follow-up of the render: a send_invoice
    invoice's, or any credit note's)."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            continue  # pydantic's own location tags: "[key]", "function-plain[…]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _storable(value: object) -> bool:
    """Whether every text in ``value`` can be stored by PostgreSQL: no NUL character (text and
    JSONB refuse it), no lone surrogate (not encodable as UTF-8). The fast pass, without paths."""
    if isinstance(value, str):
        return "\x00" not in value and (value.isascii() or _utf8(value))
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(map(_storable, value))
    return True


def _unstorable(value: object, path: str) -> str | None:
    """The path of the first text in ``value`` that ``_storable`` refuses."""
    if isinstance(value, str):
        return None if _storable(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not _storable(key):
                return path
            if not _storable(item):
                return _unstorable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if not _storable(item):
                return _unstorable(item, f"{path}[{index}]")
    return None


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(model: type[Contract], payload: dict[str, Any]) -> Contract:
    """Validate ``payload``; a bad one raises ``BadRequest`` naming the first bad field."""
    if not isinstance(payload, dict):
        raise BadRequest(f"payload must be a JSON object (got {type(payload).__name__})")
    if not _storable(payload):
        raise BadRequest(
            "must not contain NUL characters or unpaired surrogates", field=_unstorable(payload, "") or None
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = tuple(first["loc"])
        field: str | None
        if first["type"] == "extra_forbidden":  # the unknown key itself, whatever its spelling
            field = ".".join(p for p in (_field_path(loc[:-1]), str(loc[-1])) if p)
        else:
            field = _field_path(loc) or None
        message = first["msg"].removeprefix("Value error, ")
        named = re.match(r"^([a-z_]+): (.*)$", message, re.S)
        if first["type"] == "value_error" and named:  # a cross-field rule names its field
            field = f"{field}.{named[1]}" if field else named[1]
            message = named[2]
        if first["type"] == "extra_forbidden":
            message = "unknown parameter"
        elif first["type"] == "missing":
            message = "required parameter is missing"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise BadRequest(message, field=field) from None


def payload_of(contract: Contract) -> dict[str, Any]:
    """The JSON-ready message body: only what the caller set, in Stripe's names."""
    return contract.model_dump(mode="json", exclude_unset=True)


@functools.cache
def _list_of(model: type[Contract]) -> TypeAdapter[list[Contract]]:
    # a list of a model known only at run time: no static type can name it
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def payloads_of(model: type[Contract], contracts: list[Any]) -> list[dict[str, Any]]:
    """``payload_of`` of many contracts of one model in one pass: half the time of one call each."""
    payloads: list[dict[str, Any]] = _list_of(model).dump_python(contracts, mode="json", exclude_unset=True)
    return payloads
