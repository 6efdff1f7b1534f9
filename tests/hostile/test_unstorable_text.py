"""Text PostgreSQL cannot store is refused at the contract, and a failure record always fits."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy import select

from domain.errors import BadRequest
from tasks.client import BillingClient
from tasks.contracts import CustomerCreate, InvoiceItemCreate, parse
from tests.support import call, customer, row_counts
from worker.db import read_session
from worker.failures import EXCERPT_LIMIT, record_failure
from worker.tables import TaskFailure

UNSTORABLE = {"nul": "a\x00b", "lone-surrogate": "caf\ud800", "low-surrogate": "\udcff"}


@pytest.mark.parametrize("text", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"description": "{}"}, "description"),
        ({"name": "{}"}, "name"),
        ({"metadata": {"user": "{}"}}, "metadata.user"),
        ({"metadata": {"{}": "value"}}, "metadata"),
        ({"address": {"line1": "{}"}}, "address.line1"),
    ],
    ids=["description", "name", "metadata-value", "metadata-key", "nested"],
)
def test_the_client_refuses_unstorable_text_naming_the_field(
    params: dict[str, Any], field: str, text: str
) -> None:
    filled = _fill(params, text)
    with pytest.raises(BadRequest) as refused:
        BillingClient(broker_url="memory://localhost/").create_customer(email="a@example.com", **filled)
    assert refused.value.field == field
    assert "NUL" in refused.value.message


def test_a_list_of_items_names_the_item_and_field() -> None:
    items = [{"customer": "cus_A", "currency": "usd", "amount": 1}, {"customer": "cus_A", "currency": "usd",
             "amount": 1, "description": "x\x00"}]  # fmt: skip
    with pytest.raises(BadRequest) as refused:
        BillingClient(broker_url="memory://localhost/").create_invoice_items(items)
    assert refused.value.field == "items[1].description"


def test_storable_text_passes_as_it_was() -> None:
    text = "Zoë 日本 🎉 tab\there"
    command = parse(
        CustomerCreate, {"id": "cus_1", "idempotency_key": "k", "name": text, "metadata": {"é": text}}
    )
    assert command.model_dump()["name"] == text  # type: ignore[attr-defined]
    parse(InvoiceItemCreate, {"id": "ii_1", "idempotency_key": "k", "customer": "cus_1", "currency": "usd",
                              "amount": 1, "description": text})  # fmt: skip


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize("text", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_the_worker_refuses_unstorable_text_and_writes_nothing(text: str) -> None:
    cus = customer()
    before = row_counts()
    with pytest.raises(BadRequest) as refused:
        call(
            "billing.balance_transactions.create", customer=cus, amount=-100, currency="usd", description=text
        )
    assert refused.value.field == "description"
    assert row_counts() == before


def _fill(value: Any, text: str) -> Any:
    if isinstance(value, dict):
        return {_fill(k, text): _fill(v, text) for k, v in value.items()}
    return value.replace("{}", text) if isinstance(value, str) else value


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


PAYLOADS = {
    "nul": {"description": "a\x00b"},
    "nul-key": {"a\x00": 1},
    "surrogate": {"name": "\ud800"},
    "nan": {"amount": math.nan},
    "huge": {"description": "x" * 10_000_000},
    "not-an-object": [1, 2, 3],
    "bytes": {"body": b"\xff\x00"},
    "unprintable": {"x": Unprintable()},
    "deep": {"x": _deep(50_000)},
}


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_recording_a_failure_never_fails_on_its_payload(payload: Any) -> None:
    record_failure(
        task_id="t\x00" + "i" * 100, task_name="billing.\ud800" + "n" * 200, payload=payload,
        error=BadRequest("bad \x00 text \udcff", field="f\x00" * 100), retryable=False,
    )  # fmt: skip
    with read_session() as session:
        (row,) = session.scalars(select(TaskFailure))
    assert len(row.task_id) <= 64 and "\x00" not in row.task_id + row.error_message + (row.error_field or "")
    stored = row.payload or {}
    if "excerpt" in stored:
        assert len(stored["excerpt"].encode()) <= 4 * EXCERPT_LIMIT
        assert stored["bytes"] > 0 and isinstance(stored["truncated"], bool)
    assert len(str(stored)) < 100_000
