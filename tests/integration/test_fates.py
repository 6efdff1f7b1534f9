"""``billing fate``: what became of a request, read from the database when the broker is the
in-process one (the embedded default) or with ``--database``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from domain.errors import WrongState
from tests.support import customer, items, run_chain
from worker.cli import main
from worker.failures import record_failure

pytestmark = pytest.mark.usefixtures("database")


def fate(*args: str) -> Any:
    result = CliRunner().invoke(main, ["fate", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_chain_s_fate_has_every_invoice(database: str) -> None:
    cus = customer("usd")
    items(cus, "usd", [100] * 520)
    invoices = run_chain(cus, idempotency_key="chain-key", finalize=True)
    assert len(invoices) == 3  # 250, 250, 20

    shown = fate("chain-key")  # the in-process broker: the database answers
    assert (shown["status"], shown["ids"], shown["requests"]) == ("succeeded", invoices, 3)
    assert shown["task"] == "billing.invoices.create"
    assert fate("chain-key:part2", "--database")["ids"] == invoices[1:]


def test_a_recorded_failure_is_the_request_s_fate(database: str) -> None:
    payload = {"invoice": "in_GONE", "idempotency_key": "void-key"}
    error = WrongState("invoice in_GONE is void; it cannot be voided", field="invoice")
    record_failure(
        task_id="t-void", task_name="billing.invoices.void", payload=payload, error=error, retryable=False
    )

    shown = fate("void-key", "--database")
    assert (shown["status"], shown["failed_key"], shown["ids"]) == ("failed", "void-key", [])
    assert shown["error"] == {
        "type": "invalid_request_error", "code": "invalid_state", "field": "invoice",
        "message": "invoice in_GONE is void; it cannot be voided", "class": "WrongState",
    }  # fmt: skip
    assert fate("nobody-sent-this")["status"] == "pending"
