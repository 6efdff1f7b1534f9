"""Dead letters an operator can work (README: Failures): ``billing failures list|show|retry|resolve``.

Failures are recorded as the worker records them (``record_failure``); retries are sent to a
list here instead of a broker, except where the CLI's own sending is the point.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from domain.errors import BadRequest, NotFound, Parked
from tests.support import customer
from worker.cli import main, run
from worker.db import read_session
from worker.dead_letters import FailureFilter, list_failures, retry_failures, show_failure
from worker.failures import record_failure
from worker.settings import get_settings
from worker.tables import TaskFailure
from worker.views import list_objects

pytestmark = pytest.mark.usefixtures("database")

CREATE = "billing.invoices.create"
ITEM = "billing.invoice_items.create"


def fail(task_id: str, task_name: str, payload: Any, error: BaseException) -> None:
    record_failure(task_id=task_id, task_name=task_name, payload=payload, error=error, retryable=False)


@pytest.fixture
def recorded() -> dict[str, str]:
    """Four failures: two of Ada's (one parked), one of Bea's, one refused message."""
    ada, bea = customer("usd"), customer("eur")
    fail("t-missing", CREATE, {"customer": ada, "id": "in_1"}, NotFound("invoice", "in_0", field="invoice"))
    fail("t-parked", CREATE, {"customer": ada, "id": "in_2"}, Parked("redelivered 5 times", field="customer"))
    fail("t-bad", ITEM, {"customer": bea, "amount": -1}, BadRequest("must be positive", field="amount"))
    fail("t-raw", "billing.nope", float("nan"), BadRequest("not JSON"))
    return {"ada": ada, "bea": bea}


def test_an_excerpt_of_a_payload_too_large_to_keep_is_not_replayed(recorded: dict[str, str]) -> None:
    fail("t-huge", ITEM, {"customer": recorded["ada"], "description": "x" * 300_000}, BadRequest("too long"))
    shown = cli("failures", "show", "t-huge")
    assert shown["payload"]["truncated"] is True and shown["replayable"] is False


def cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def exit_of(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Exit code and stderr of the installed ``billing`` entry point."""
    monkeypatch.setattr(sys, "argv", ["billing", *args])
    with pytest.raises(SystemExit) as stopped:
        run()
    return int(stopped.value.code or 0), capsys.readouterr().err


def ids(listing: dict[str, Any]) -> list[str]:
    return [failure["task_id"] for failure in listing["data"]]


def test_list_filters_by_task_code_customer_parked_status_and_time(recorded: dict[str, str]) -> None:
    assert ids(cli("failures", "list")) == ["t-raw", "t-bad", "t-parked", "t-missing"]  # newest first
    assert ids(cli("failures", "list", "--task", CREATE)) == ["t-parked", "t-missing"]
    assert ids(cli("failures", "list", "--code", "resource_missing")) == ["t-missing"]
    assert ids(cli("failures", "list", "--customer", recorded["ada"])) == ["t-parked", "t-missing"]
    assert ids(cli("failures", "list", "--customer", recorded["bea"])) == ["t-bad"]
    assert ids(cli("failures", "list", "--parked")) == ["t-parked"]
    assert ids(cli("failures", "list", "--not-parked", "--task", CREATE)) == ["t-missing"]
    assert ids(cli("failures", "list", "--status", "open")) == ["t-raw", "t-bad", "t-parked", "t-missing"]
    assert ids(cli("failures", "list", "--status", "resolved")) == []
    assert ids(cli("failures", "list", "--since", "2999-01-01T00:00:00")) == []
    assert len(ids(cli("failures", "list", "--since", "0"))) == 4
    page = cli("failures", "list", "--limit", "2")
    assert (ids(page), page["has_more"]) == (["t-raw", "t-bad"], True)
    assert ids(cli("failures", "list", "--starting-after", "t-bad")) == ["t-parked", "t-missing"]


def test_a_failure_shows_its_status_and_whether_it_was_parked(recorded: dict[str, str]) -> None:
    parked = cli("failures", "show", "t-parked")
    assert parked["object"] == "task_failure"
    assert (parked["status"], parked["parked"], parked["customer"]) == ("open", True, recorded["ada"])
    assert parked["error"]["code"] == "message_parked" and parked["history"] == []
    assert (parked["resolved_at"], parked["note"], parked["replayable"]) == (None, None, True)
    assert cli("failures", "show", "t-raw")["replayable"] is False


def test_retry_marks_sends_and_leaves_a_trail_and_a_new_failure_reopens(recorded: dict[str, str]) -> None:
    sent: list[tuple[str, str, dict[str, Any] | None]] = []
    out = retry_failures(
        ["t-missing"],
        FailureFilter(),
        actor="ops",
        send=lambda r: sent.append((r.task_id, r.task_name, r.payload)),
    )
    assert sent == [("t-missing", CREATE, {"customer": recorded["ada"], "id": "in_1"})]
    assert [(f["task_id"], f["status"]) for f in out["data"]] == [("t-missing", "retried")]
    with read_session() as session:
        shown = show_failure(session, "t-missing")
    assert shown["status"] == "retried"
    assert [(h["action"], h["actor"]) for h in shown["history"]] == [("retried", "ops")]

    fail("t-missing", CREATE, {"customer": recorded["ada"], "id": "in_1"}, NotFound("invoice", "in_0"))
    with read_session() as session:
        shown = show_failure(session, "t-missing")
    assert (shown["status"], shown["attempts"]) == ("open", 2)
    assert [h["action"] for h in shown["history"]] == ["retried", "reopened"]


def test_retry_by_filter_takes_open_failures_only(recorded: dict[str, str]) -> None:
    sent: list[str] = []
    retry_failures(["t-parked"], FailureFilter(), actor="ops", send=lambda r: sent.append(r.task_id))
    retry_failures([], FailureFilter(task=CREATE), actor="ops", send=lambda r: sent.append(r.task_id))
    assert sent == ["t-parked", "t-missing"]  # t-parked was retried already, so not open


def test_a_retry_that_cannot_be_sent_reopens_what_was_not_sent(recorded: dict[str, str]) -> None:
    def broker_down(row: TaskFailure) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        retry_failures(["t-missing", "t-parked"], FailureFilter(), actor="ops", send=broker_down)
    with read_session() as session:
        listing = list_failures(session, FailureFilter(status="open"))
        shown = show_failure(session, "t-missing")
    assert ids(listing) == ["t-raw", "t-bad", "t-parked", "t-missing"]
    assert [h["action"] for h in shown["history"]] == ["retried", "reopened"]


def test_resolve_keeps_who_when_and_why(recorded: dict[str, str]) -> None:
    out = cli("failures", "resolve", "t-bad", "t-raw", "--note", "refunded by hand", "--actor", "ada@ops")
    assert [(f["task_id"], f["status"], f["note"]) for f in out["data"]] == [
        ("t-bad", "resolved", "refunded by hand"),
        ("t-raw", "resolved", "refunded by hand"),
    ]
    shown = cli("failures", "show", "t-bad")
    assert shown["resolved_at"] is not None
    assert [(h["action"], h["actor"], h["note"]) for h in shown["history"]] == [
        ("resolved", "ada@ops", "refunded by hand")
    ]
    assert ids(cli("failures", "list", "--status", "resolved")) == ["t-raw", "t-bad"]


def test_unknown_ids_and_unreplayable_payloads_exit_non_zero_and_change_nothing(
    recorded: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://127.0.0.1:1/0")  # refused before anything is sent
    get_settings.cache_clear()
    code, err = exit_of(monkeypatch, capsys, "failures", "retry", "t-missing", "t-nope")
    assert code == 2
    assert json.loads(err)["error"]["message"] == "no such task failure: 't-nope'"
    code, err = exit_of(monkeypatch, capsys, "failures", "resolve", "t-nope", "t-gone", "--note", "x")
    assert code == 2 and "'t-nope, t-gone'" in err
    code, err = exit_of(monkeypatch, capsys, "failures", "show", "t-nope")
    assert code == 2
    code, err = exit_of(monkeypatch, capsys, "failures", "retry", "t-raw")
    assert code == 2 and "no replayable payload recorded for t-raw" in err
    code, err = exit_of(monkeypatch, capsys, "failures", "retry")
    assert code == 2 and "give task ids or at least one filter" in err
    with read_session() as session:
        assert ids(list_failures(session, FailureFilter(status="open"))) == [
            "t-raw",
            "t-bad",
            "t-parked",
            "t-missing",
        ]


@pytest.mark.redis
def test_the_cli_retry_sends_on_the_broker(
    recorded: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    queue = redis.Redis.from_url(redis_url)
    queue.delete("billing.invoices")
    monkeypatch.setenv("BILLING_BROKER_URL", redis_url)
    get_settings.cache_clear()
    out = cli("failures", "retry", "--parked")
    assert [(f["task_id"], f["status"]) for f in out["data"]] == [("t-parked", "retried")]
    (entry,) = [json.loads(raw) for raw in queue.lrange("billing.invoices", 0, -1)]
    assert (entry["headers"]["id"], entry["headers"]["task"]) == ("t-parked", CREATE)
    queue.delete("billing.invoices")


def test_the_cli_retry_refuses_the_in_process_broker(
    recorded: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = exit_of(monkeypatch, capsys, "failures", "retry", "--parked")
    assert code == 2 and "set BILLING_BROKER_URL" in err
    with read_session() as session:
        assert show_failure(session, "t-parked")["status"] == "open"  # nothing sent, nothing marked


def test_list_task_failures_keeps_its_shape(recorded: dict[str, str]) -> None:
    with read_session() as session:
        (first, *_) = list_objects(session, "task_failures")["data"]
    assert set(first) == {
        "object", "id", "task_id", "task_name", "payload", "error", "retryable", "attempts", "first_seen",
        "last_seen",
    }  # fmt: skip
