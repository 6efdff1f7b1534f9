"""worker.views against a real SQLite database: exact Stripe-shaped dicts, lists, search."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session, SQLModel

from domain.errors import BadRequest, NotFound
from worker import views
from worker.db import make_engine
from worker.tables import (
    BalanceTransaction,
    CouponRow,
    CreditNote,
    Customer,
    CustomerBalance,
    CustomerTaxId,
    DiscountRow,
    Invoice,
    InvoiceItem,
    TaskFailure,
    TaxRateRow,
)

NOW = 1_700_000_000


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'views.db'}")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture
def selects(engine: Engine) -> list[tuple[str, Any]]:
    """SELECT statements (with parameters) sent to the database from now on."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def query_plan(session: Session, statement: str, parameters: Any) -> str:
    plan = session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return " ".join(row[-1] for row in plan)


def add(session: Session, *rows: SQLModel) -> None:
    session.add_all(rows)
    session.commit()


def customer(customer_id: str = "cus_A", **fields: Any) -> Customer:
    fields.setdefault("invoice_prefix", customer_id.removeprefix("cus_").upper() + "PFX")
    return Customer(id=customer_id, created=NOW, **fields)


def item(
    item_id: str, *, created: int, customer_id: str = "cus_A", currency: str = "usd", **fields: Any
) -> InvoiceItem:
    return InvoiceItem(
        id=item_id,
        customer_id=customer_id,
        currency=currency,
        amount=fields.pop("amount", 1000),
        created=created,
        **fields,
    )


# Customers and balances


def test_customer_balance_in_default_currency_and_expanded_credit_balance(session: Session) -> None:
    add(
        session,
        customer(
            email="ada@example.com",
            name="Ada",
            currency="usd",
            metadata_={"internal_id": "42"},
            preferred_locales=["fr-CA", "en"],
            default_payment_method="pm_1",
        ),
        CustomerBalance(customer_id="cus_A", currency="usd", balance=-1500, transaction_count=2),
        CustomerBalance(customer_id="cus_A", currency="cad", balance=300, transaction_count=1),
        CustomerBalance(customer_id="cus_A", currency="eur", balance=0, transaction_count=2),
        CustomerTaxId(id="txi_1", customer_id="cus_A", type="eu_vat", value="DE123456789", created=NOW),
    )

    plain = views.get_object(session, "cus_A", now=NOW)
    assert plain == {
        "object": "customer",
        "id": "cus_A",
        "email": "ada@example.com",
        "name": "Ada",
        "phone": None,
        "description": None,
        "metadata": {"internal_id": "42"},
        "address": None,
        "shipping": None,
        "preferred_locales": ["fr-CA", "en"],
        "tax_exempt": "none",
        "currency": "usd",
        "invoice_prefix": "APFX",
        "next_invoice_sequence": 1,
        "invoice_settings": {"default_payment_method": "pm_1"},
        "discount": None,
        "balance": -1500,
        "tax_ids": {
            "object": "list",
            "data": [{"object": "tax_id", "id": "txi_1", "type": "eu_vat", "value": "DE123456789"}],
        },
        "created": NOW,
    }

    expanded = views.get_object(session, "cus_A", expand=["invoice_credit_balance"], now=NOW)
    assert expanded == {**plain, "invoice_credit_balance": {"usd": 1500, "cad": -300}}
    assert views.customer_balances(session, "cus_A") == {"cad": 300, "eur": 0, "usd": -1500}


def test_customer_without_currency_has_zero_balance_and_json_defaults(session: Session) -> None:
    add(session, customer(), CustomerBalance(customer_id="cus_A", currency="usd", balance=-700))

    data = views.get_object(session, "cus_A", now=NOW)

    assert data["balance"] == 0
    assert data["metadata"] == {}
    assert data["preferred_locales"] == []
    assert data["tax_ids"] == {"object": "list", "data": []}
    assert "deleted" not in data
    assert views.customer_balances(session, "cus_A") == {"usd": -700}


def test_customer_balances_of_unknown_customer(session: Session) -> None:
    add(session, customer())

    assert views.customer_balances(session, "cus_A") == {}
    with pytest.raises(NotFound) as caught:
        views.customer_balances(session, "cus_missing")
    assert caught.value.field == "customer"


def test_deleted_customer_is_marked(session: Session) -> None:
    add(session, customer(deleted=True))

    assert views.get_object(session, "cus_A", now=NOW)["deleted"] is True


def test_customer_discount_embeds_its_coupon_until_it_ends(session: Session) -> None:
    add(
        session,
        customer(),
        CouponRow(id="co_TEN", name="Ten", percent_off="10", duration="forever", created=NOW - 10),
        DiscountRow(id="di_1", customer_id="cus_A", coupon_id="co_TEN", start=NOW - 5, end=NOW + 100),
    )

    discount = views.get_object(session, "cus_A", now=NOW)["discount"]
    assert discount == {
        "object": "discount",
        "id": "di_1",
        "coupon": views.get_object(session, "co_TEN", now=NOW),
        "customer": "cus_A",
        "start": NOW - 5,
        "end": NOW + 100,
    }
    assert views.get_object(session, "di_1", now=NOW) == discount
    assert views.get_object(session, "cus_A", now=NOW + 100)["discount"] is None


def test_unknown_expansion_is_refused(session: Session) -> None:
    add(session, customer(), Invoice(id="in_1", customer_id="cus_A", currency="usd"))

    with pytest.raises(BadRequest) as caught:
        views.get_object(session, "in_1", expand=["invoice_credit_balance"])
    assert caught.value.field == "expand"


# Invoices


def test_invoice_lines_come_in_created_then_id_order(session: Session) -> None:
    add(
        session,
        customer(),
        Invoice(
            id="in_1",
            customer_id="cus_A",
            currency="usd",
            status="open",
            number="APFX-0001",
            subtotal=3500,
            total_excluding_tax=3500,
            total=3500,
            amount_due=3500,
            amount_remaining=3500,
            discounts=["co_TEN"],
            total_taxes=[{"amount": 0, "tax_rate": "txr_1", "taxable_amount": 3500, "inclusive": False}],
            created=NOW,
            finalized_at=NOW + 60,
        ),
    )
    add(
        session,
        item("ii_C", created=NOW - 10, invoice_id="in_1", amount=500, period_start=NOW - 100, period_end=NOW),
        item("ii_B", created=NOW - 20, invoice_id="in_1", amount=1000, tax_rates=["txr_1"]),
        item("ii_A", created=NOW - 10, invoice_id="in_1", amount=2000, quantity=2, unit_amount=1000),
        item("ii_PENDING", created=NOW - 30),
    )

    invoice = views.get_object(session, "in_1")

    assert [line["id"] for line in invoice["lines"]["data"]] == ["ii_B", "ii_A", "ii_C"]
    assert invoice["lines"]["total_count"] == 3
    assert invoice["lines"]["has_more"] is False
    assert invoice["lines"]["data"][2] == {
        "object": "line_item",
        "id": "ii_C",
        "invoice_item": "ii_C",
        "amount": 500,
        "currency": "usd",
        "description": None,
        "discountable": True,
        "quantity": 1,
        "unit_amount": None,
        "period": {"start": NOW - 100, "end": NOW},
        "metadata": {},
        "discount_amounts": [],
        "tax_amounts": [],
        "tax_rates": [],
    }
    assert invoice["lines"]["data"][0]["tax_rates"] == ["txr_1"]
    assert invoice["lines"]["data"][0]["period"] is None
    assert {
        k: invoice[k] for k in ("object", "customer", "status", "number", "total", "paid", "discounts")
    } == {
        "object": "invoice",
        "customer": "cus_A",
        "status": "open",
        "number": "APFX-0001",
        "total": 3500,
        "paid": False,
        "discounts": ["co_TEN"],
    }
    assert invoice["total_discount_amounts"] == []
    assert invoice["total_taxes"] == [
        {"amount": 0, "tax_rate": "txr_1", "taxable_amount": 3500, "inclusive": False}
    ]
    assert invoice["status_transitions"] == {
        "finalized_at": NOW + 60,
        "paid_at": None,
        "voided_at": None,
        "marked_uncollectible_at": None,
    }


def test_an_invoice_shows_its_first_ten_lines_and_lists_the_rest_in_claim_order(session: Session) -> None:
    """Stripe's invoice holds the total count of its lines and the first handful, with the URL
    of the full list; ``list lines`` pages through all of them in the order the invoice shows."""
    add(session, customer(), Invoice(id="in_1", customer_id="cus_A", currency="usd"))
    ids = [f"ii_{n:02}" for n in range(23)]
    add(session, *(item(i, created=NOW + n // 2, invoice_id="in_1") for n, i in enumerate(ids)))

    lines = views.get_object(session, "in_1")["lines"]

    assert [line["id"] for line in lines["data"]] == ids[:10]
    assert (lines["total_count"], lines["has_more"], lines["url"]) == (23, True, "/v1/invoices/in_1/lines")
    first = views.list_objects(session, "lines", invoice="in_1", limit=10)
    assert first["data"] == lines["data"] and first["has_more"] is True
    assert first["url"] == "/v1/invoices/in_1/lines"
    second = views.list_objects(session, "lines", invoice="in_1", limit=10, starting_after=ids[9])
    third = views.list_objects(session, "lines", invoice="in_1", limit=10, starting_after=ids[19])
    assert [line["id"] for line in second["data"] + third["data"]] == ids[10:]
    assert (second["has_more"], third["has_more"]) == (True, False)
    back = views.list_objects(session, "lines", invoice="in_1", limit=5, ending_before=ids[10])
    assert [line["id"] for line in back["data"]] == ids[5:10] and back["has_more"] is True
    assert (
        views.list_objects(session, "lines", invoice="in_1", limit=100)["data"][12]["object"] == "line_item"
    )


def test_lines_are_listed_for_an_invoice_that_exists(session: Session) -> None:
    add(session, customer(), Invoice(id="in_1", customer_id="cus_A", currency="usd"))
    with pytest.raises(BadRequest) as missing:
        views.list_objects(session, "lines")
    assert missing.value.field == "invoice"
    with pytest.raises(NotFound) as unknown:
        views.list_objects(session, "lines", invoice="in_NOPE")
    assert unknown.value.field == "invoice"
    with pytest.raises(BadRequest) as other:
        views.list_objects(session, "lines", invoice="in_1", customer="cus_A")
    assert other.value.field == "customer"
    assert views.list_objects(session, "lines", invoice="in_1")["data"] == []
    assert views.get_object(session, "in_1")["lines"] == {
        "object": "list",
        "data": [],
        "total_count": 0,
        "has_more": False,
        "url": "/v1/invoices/in_1/lines",
    }


def test_invoice_lines_load_in_one_query_per_page(session: Session, selects: list[tuple[str, Any]]) -> None:
    add(session, customer(), *(Invoice(id=f"in_{n}", customer_id="cus_A", currency="usd") for n in range(5)))
    add(
        session, *(item(f"ii_{n}_{m}", created=NOW, invoice_id=f"in_{n}") for n in range(5) for m in range(3))
    )
    selects.clear()

    page = views.list_objects(session, "invoices", customer="cus_A")

    assert [len(invoice["lines"]["data"]) for invoice in page["data"]] == [3] * 5
    # the page, its lines, its customers' test clocks, its drafts' failed finalizations, which
    # have a document (invoice_pdf)
    assert len(selects) == 5
    selects.clear()
    views.get_object(session, "in_0")
    assert len(selects) == 5


# Lists


def test_pending_items_of_one_currency_use_the_partial_index(
    session: Session, selects: list[tuple[str, Any]]
) -> None:
    add(
        session,
        customer(),
        customer("cus_B"),
        Invoice(id="in_1", customer_id="cus_A", currency="usd"),
    )
    add(
        session,
        item("ii_3", created=NOW - 10),
        item("ii_1", created=NOW),
        item("ii_2", created=NOW - 10),
        item("ii_ATTACHED", created=NOW - 50, invoice_id="in_1"),
        item("ii_CAD", created=NOW - 50, currency="cad"),
        item("ii_OTHER", created=NOW - 50, customer_id="cus_B"),
    )
    selects.clear()

    page = views.list_objects(session, "invoice_items", customer="cus_A", pending=True, currency="usd")

    assert [i["id"] for i in page["data"]] == ["ii_1", "ii_3", "ii_2"]  # newest first, as Stripe lists
    assert page["has_more"] is False
    assert page["url"] == "/v1/invoice_items"
    assert page["data"][2] == {
        "object": "invoiceitem",
        "id": "ii_2",
        "customer": "cus_A",
        "currency": "usd",
        "amount": 1000,
        "unit_amount": None,
        "quantity": 1,
        "description": None,
        "discountable": True,
        "period": None,
        "metadata": {},
        "tax_rates": [],
        "invoice": None,
        "subscription": None,
        "date": NOW - 10,
        "created": NOW - 10,
    }
    ((statement, parameters),) = selects
    plan = query_plan(session, statement, parameters)
    assert "ix_invoice_items_pending" in plan
    assert "TEMP B-TREE" not in plan

    attached = views.list_objects(session, "invoice_items", customer="cus_A", pending=False)
    assert [i["id"] for i in attached["data"]] == ["ii_ATTACHED"]
    assert attached["data"][0]["invoice"] == "in_1"


def test_pending_items_page_by_created_then_id(session: Session, selects: list[tuple[str, Any]]) -> None:
    add(session, customer())
    add(session, item("ii_3", created=NOW - 10), item("ii_1", created=NOW), item("ii_2", created=NOW - 10))
    pending = {"customer": "cus_A", "pending": True, "currency": "usd", "limit": 2}

    first = views.list_objects(session, "invoice_items", **pending)
    selects.clear()
    second = views.list_objects(session, "invoice_items", **pending, starting_after="ii_3")
    plan = query_plan(session, *selects[-1])
    back = views.list_objects(session, "invoice_items", **pending, ending_before="ii_2")

    assert ([i["id"] for i in first["data"]], first["has_more"]) == (["ii_1", "ii_3"], True)
    assert ([i["id"] for i in second["data"]], second["has_more"]) == (["ii_2"], False)
    assert ([i["id"] for i in back["data"]], back["has_more"]) == (["ii_1", "ii_3"], False)
    assert (
        "USING INDEX ix_invoice_items_pending (customer_id=? AND currency=? AND (created,id)<(?,?))" in plan
    )
    assert "TEMP B-TREE" not in plan
    for cursor in ("starting_after", "ending_before"):
        with pytest.raises(NotFound) as caught:
            views.list_objects(session, "invoice_items", pending=True, **{cursor: "ii_GONE"})
        assert caught.value.field == cursor


def test_pagination_newest_first_with_has_more(session: Session) -> None:
    add(
        session,
        *(
            TaxRateRow(id=f"txr_{n}", display_name="VAT", percentage="20", created=NOW - n)
            for n in (5, 1, 4, 2, 3)
        ),
    )

    pages = [views.list_objects(session, "tax_rates", limit=2)]
    while pages[-1]["has_more"]:
        last = pages[-1]["data"][-1]["id"]
        pages.append(views.list_objects(session, "tax_rates", limit=2, starting_after=last))

    assert [[r["id"] for r in page["data"]] for page in pages] == [
        ["txr_1", "txr_2"],
        ["txr_3", "txr_4"],
        ["txr_5"],
    ]
    assert [page["has_more"] for page in pages] == [True, True, False]
    backwards = [views.list_objects(session, "tax_rates", limit=2, ending_before="txr_5")]
    while backwards[-1]["has_more"]:
        first = backwards[-1]["data"][0]["id"]
        backwards.append(views.list_objects(session, "tax_rates", limit=2, ending_before=first))
    assert [[r["id"] for r in page["data"]] for page in backwards] == [["txr_3", "txr_4"], ["txr_1", "txr_2"]]
    assert [page["has_more"] for page in backwards] == [True, False]
    assert pages[0] == {
        "object": "list",
        "data": pages[0]["data"],
        "has_more": True,
        "url": "/v1/tax_rates",
    }
    assert pages[2]["data"][0] == {
        "object": "tax_rate",
        "id": "txr_5",
        "display_name": "VAT",
        "percentage": "20",
        "inclusive": False,
        "active": True,
        "country": None,
        "jurisdiction": None,
        "description": None,
        "metadata": {},
        "created": NOW - 5,
    }
    exact = views.list_objects(session, "tax_rates", limit=5)
    assert (len(exact["data"]), exact["has_more"]) == (5, False)
    assert views.list_objects(session, "tax_rates", starting_after="txr_5")["data"] == []
    assert views.list_objects(session, "tax_rates", ending_before="txr_1")["data"] == []


def test_list_filters_invoices_by_customer_status_and_currency(session: Session) -> None:
    add(
        session,
        customer(),
        customer("cus_B"),
        Invoice(id="in_1", customer_id="cus_A", currency="usd", status="paid", number="A-1"),
        Invoice(id="in_2", customer_id="cus_A", currency="cad"),
        Invoice(id="in_3", customer_id="cus_B", currency="usd", status="paid", number="B-1"),
        Invoice(id="in_4", customer_id="cus_A", currency="usd"),
    )

    def ids(**filters: Any) -> list[str]:
        return [i["id"] for i in views.list_objects(session, "invoices", **filters)["data"]]

    assert ids(customer="cus_A") == ["in_4", "in_2", "in_1"]
    assert ids(status="paid") == ["in_3", "in_1"]
    assert ids(customer="cus_A", currency="usd", status="draft") == ["in_4"]


def test_items_and_credit_notes_filter_by_invoice(session: Session) -> None:
    add(
        session,
        customer(),
        Invoice(id="in_1", customer_id="cus_A", currency="usd"),
        Invoice(id="in_2", customer_id="cus_A", currency="usd"),
    )
    add(
        session,
        item("ii_1", created=NOW - 3, invoice_id="in_1"),
        item("ii_2", created=NOW - 2, invoice_id="in_2"),
        item("ii_3", created=NOW - 1, invoice_id="in_1"),
        item("ii_PENDING", created=NOW),
        *(
            CreditNote(
                id=f"cn_{n}", invoice_id=invoice, customer_id="cus_A", currency="usd",
                number=f"APFX-0001-CN-0{n}", type="pre_payment", amount=100, created=NOW + n,
            )
            for n, invoice in ((1, "in_1"), (2, "in_2"), (3, "in_1"))
        ),
    )  # fmt: skip

    def ids(resource: str, invoice: str) -> list[str]:
        return [o["id"] for o in views.list_objects(session, resource, invoice=invoice)["data"]]

    assert ids("invoice_items", "in_1") == ["ii_3", "ii_1"]
    assert ids("invoice_items", "in_2") == ["ii_2"]
    assert ids("credit_notes", "in_1") == ["cn_3", "cn_1"]
    assert ids("credit_notes", "in_GONE") == []


def test_deleted_customers_are_not_listed(session: Session) -> None:
    add(session, customer("cus_A"), customer("cus_B", deleted=True), customer("cus_C"))

    assert [c["id"] for c in views.list_objects(session, "customers", now=NOW)["data"]] == ["cus_C", "cus_A"]


@pytest.mark.parametrize(
    ("resource", "filters", "field"),
    [
        ("customers", {"customer": "cus_A"}, "customer"),
        ("coupons", {"currency": "usd"}, "currency"),
        ("invoices", {"pending": True}, "pending"),
        ("balance_transactions", {"status": "open"}, "status"),
        ("invoices", {"status": "finalized"}, "status"),
        ("invoices", {"currency": "USD"}, "currency"),
        ("invoices", {"limit": 0}, "limit"),
        ("invoices", {"limit": 101}, "limit"),
        ("task_failures", {"starting_after": "tf_1"}, "starting_after"),
        ("task_failures", {"ending_before": "tf_1"}, "ending_before"),
        ("invoices", {"starting_after": "in_1", "ending_before": "in_2"}, "ending_before"),
        ("invoices", {"invoice": "in_1"}, "invoice"),
        ("payment_intents", {}, "resource"),
        ("events", {"type": "invoice.sent"}, "type"),
        ("events", {"type": "charge.*"}, "type"),
        ("events", {"type": "invoice."}, "type"),
        ("events", {"type": ""}, "type"),
        ("events", {"created_gte": -1}, "created_gte"),
        ("events", {"created_lte": "2026-01-01"}, "created_lte"),
        ("events", {"created_gte": True}, "created_gte"),
        ("events", {"created_lte": 1.5}, "created_lte"),
        ("events", {"limit": 0}, "limit"),
        ("events", {"limit": 101}, "limit"),
        ("events", {"starting_after": "evt_1", "ending_before": "evt_2"}, "ending_before"),
        ("events", {"status": "open"}, "status"),
        ("invoices", {"type": "invoice.paid"}, "type"),
        ("invoices", {"created_gte": 0}, "created_gte"),
        ("lines", {}, "invoice"),
        ("lines", {"customer": "cus_A", "invoice": "in_1"}, "customer"),
        ("lines", {"pending": True, "invoice": "in_1"}, "pending"),
        ("lines", {"invoice": "in_1", "limit": 0}, "limit"),
    ],
)
def test_list_refuses_filters_that_do_not_apply(
    session: Session, resource: str, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        views.list_objects(session, resource, **filters)
    assert caught.value.field == field


# Search


def test_find_customers_by_email_and_metadata(session: Session) -> None:
    add(
        session,
        customer("cus_A", email="ada@example.com", metadata_={"internal_id": "42", "team": "x"}),
        customer("cus_B", email="ada@example.com", metadata_={"internal_id": "43", "team": "x"}),
        customer("cus_C", email="bob@example.com", metadata_={"internal_id": "42"}),
        customer("cus_D", email="ada@example.com", metadata_={"internal_id": "42"}, deleted=True),
        customer("cus_E", email="ADA@example.com"),
    )

    def ids(**query: Any) -> list[str]:
        return [c["id"] for c in views.find_customers(session, now=NOW, **query)]

    assert ids(email="ada@example.com") == ["cus_A", "cus_B"]
    assert ids(metadata={"internal_id": "42"}) == ["cus_A", "cus_C"]
    assert ids(metadata={"internal_id": "42", "team": "x"}) == ["cus_A"]
    assert ids(email="ada@example.com", metadata={"internal_id": "43"}) == ["cus_B"]
    assert ids(metadata={"missing": "42"}) == []
    assert views.find_customers(session, email="bob@example.com", now=NOW) == [
        views.get_object(session, "cus_C", now=NOW)
    ]
    with pytest.raises(BadRequest) as caught:
        views.find_customers(session)
    assert caught.value.field == "email"


# Other object types


def test_coupon_percent_stays_a_string_and_validity_follows_now(session: Session) -> None:
    add(
        session,
        CouponRow(id="co_HALF", percent_off="12.5", duration="once", redeem_by=NOW, created=NOW - 100),
        CouponRow(
            id="co_FIVE",
            amount_off=500,
            currency="usd",
            currency_options={"eur": 450},
            duration="repeating",
            duration_in_months=3,
            max_redemptions=2,
            times_redeemed=2,
            created=NOW - 100,
        ),
    )

    assert views.get_object(session, "co_HALF", now=NOW) == {
        "object": "coupon",
        "id": "co_HALF",
        "name": None,
        "percent_off": "12.5",
        "amount_off": None,
        "currency": None,
        "currency_options": {},
        "duration": "once",
        "duration_in_months": None,
        "max_redemptions": None,
        "times_redeemed": 0,
        "redeem_by": NOW,
        "valid": True,
        "metadata": {},
        "created": NOW - 100,
    }
    assert views.get_object(session, "co_HALF", now=NOW + 1)["valid"] is False
    five = views.get_object(session, "co_FIVE", now=NOW)
    assert (five["currency_options"], five["valid"]) == ({"eur": {"amount_off": 450}}, False)


def test_caller_named_coupon_needs_its_kind(session: Session) -> None:
    add(session, CouponRow(id="SUMMER", percent_off="5", duration="once"))

    assert views.get_object(session, "SUMMER", kind="coupon", now=NOW)["id"] == "SUMMER"
    with pytest.raises(BadRequest):
        views.get_object(session, "SUMMER")


def test_credit_note_and_balance_transaction(session: Session) -> None:
    add(session, customer(currency="usd"), Invoice(id="in_1", customer_id="cus_A", currency="usd"))
    add(
        session,
        CreditNote(
            id="cn_1",
            invoice_id="in_1",
            customer_id="cus_A",
            currency="usd",
            number="APFX-0001-CN-01",
            type="post_payment",
            amount=700,
            credit_amount=500,
            refund_amount=200,
            reason="duplicate",
            lines=[{"type": "custom_line_item", "amount": 700}],
            customer_balance_transaction="cbtxn_1",
            created=NOW,
        ),
    )
    add(
        session,
        BalanceTransaction(
            id="cbtxn_1",
            customer_id="cus_A",
            currency="usd",
            sequence=1,
            amount=-500,
            ending_balance=-500,
            type="credit_note",
            invoice_id="in_1",
            credit_note_id="cn_1",
            created=NOW,
        ),
    )

    assert views.get_object(session, "cn_1") == {
        "object": "credit_note",
        "id": "cn_1",
        "number": "APFX-0001-CN-01",
        "invoice": "in_1",
        "customer": "cus_A",
        "currency": "usd",
        "status": "issued",
        "type": "post_payment",
        "amount": 700,
        "reason": "duplicate",
        "memo": None,
        "refund_amount": 200,
        "credit_amount": 500,
        "out_of_band_amount": 0,
        "amount_due_reduction": 0,
        "subtotal": 700,
        "subtotal_excluding_tax": 700,
        "total": 700,
        "total_excluding_tax": 700,
        "discount_amount": 0,
        "discount_amounts": [],
        "total_taxes": [],
        "pre_payment_amount": 0,
        "post_payment_amount": 700,
        "effective_at": NOW,
        "lines": {
            "object": "list",
            "data": [{"type": "custom_line_item", "amount": 700}],
            "total_count": 1,
            "has_more": False,
        },
        "customer_balance_transaction": "cbtxn_1",
        "metadata": {},
        "created": NOW,
        "voided_at": None,
        "pdf": None,
    }
    assert views.list_objects(session, "balance_transactions", customer="cus_A", currency="usd")["data"] == [
        {
            "object": "customer_balance_transaction",
            "id": "cbtxn_1",
            "customer": "cus_A",
            "currency": "usd",
            "amount": -500,
            "ending_balance": -500,
            "type": "credit_note",
            "invoice": "in_1",
            "credit_note": "cn_1",
            "description": None,
            "metadata": {},
            "created": NOW,
        }
    ]
    assert [n["id"] for n in views.list_objects(session, "credit_notes", status="issued")["data"]] == ["cn_1"]


def test_task_failures_list_with_integer_cursor(session: Session) -> None:
    add(
        session,
        *(
            TaskFailure(
                task_id=f"t{n}",
                task_name="billing.invoices.finalize",
                payload={"invoice": "in_1"},
                error_type="WrongState",
                error_code="invalid_state",
                error_message="invoice is paid",
                first_seen=NOW,
                last_seen=NOW + n,
            )
            for n in range(3)
        ),
    )

    first = views.list_objects(session, "task_failures", limit=2)
    rest = views.list_objects(session, "task_failures", starting_after=str(first["data"][-1]["id"]))
    back = views.list_objects(session, "task_failures", ending_before=str(rest["data"][0]["id"]))

    assert [f["task_id"] for f in first["data"] + rest["data"]] == ["t2", "t1", "t0"]
    assert [f["task_id"] for f in back["data"]] == ["t2", "t1"]
    assert rest["data"][0] == {
        "object": "task_failure",
        "id": rest["data"][0]["id"],
        "task_id": "t0",
        "task_name": "billing.invoices.finalize",
        "payload": {"invoice": "in_1"},
        "error": {
            "type": "invalid_request_error",
            "code": "invalid_state",
            "field": None,
            "message": "invoice is paid",
            "class": "WrongState",
        },
        "retryable": False,
        "attempts": 1,
        "first_seen": NOW,
        "last_seen": NOW,
    }


# Errors


def test_missing_object_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound) as caught:
        views.get_object(session, "cus_MISSING")
    assert (caught.value.field, caught.value.resource, caught.value.object_id) == (
        "id",
        "customer",
        "cus_MISSING",
    )

    with pytest.raises(NotFound) as caught:
        views.get_object(session, "ii_MISSING")
    assert (caught.value.field, caught.value.resource) == ("id", "invoiceitem")


@pytest.mark.parametrize("object_id", ["zz_123", "nounderscore", ""])
def test_unknown_prefix_is_a_bad_request(session: Session, object_id: str) -> None:
    with pytest.raises(BadRequest) as caught:
        views.get_object(session, object_id)
    assert type(caught.value) is BadRequest
    assert caught.value.field == "id"
