"""Webhook endpoints and the guarded sender, on SQLite and PostgreSQL, with a real HTTP receiver
on 127.0.0.1 (README: Webhooks)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from domain.errors import BadRequest, NotFound
from tasks.ids import new_id
from tasks.webhooks import SIGNATURE_HEADER, new_signing_secret, signature_header, verify_signature
from tests.support import call, get
from worker.cli import main as cli
from worker.db import read_session
from worker.devtools.receiver import Receiver
from worker.settings import get_settings
from worker.views import list_objects
from worker.webhooks import MAX_RESPONSE_BYTES, post

pytestmark = pytest.mark.usefixtures("database")

CREATE = "billing.webhook_endpoints.create"
UPDATE = "billing.webhook_endpoints.update"
DELETE = "billing.webhook_endpoints.delete"


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver listens on 127.0.0.1: tests allow private addresses explicitly."""
    monkeypatch.setenv("BILLING_WEBHOOKS_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()


def endpoint(url: str = "https://93.184.215.14/hooks", events: list[str] | None = None, **fields: Any) -> str:
    outcome = call(
        CREATE,
        id=new_id("we"),
        url=url,
        enabled_events=events or ["*"],
        secret=fields.pop("secret", new_signing_secret()),
        **fields,
    )
    assert outcome.id
    return outcome.id


def test_an_endpoint_is_stripe_shaped_and_never_shows_its_secret(allow_private: None) -> None:
    secret = new_signing_secret()
    we = endpoint(events=["invoice.paid", "invoice.finalized"], secret=secret, description="accounting")
    shown = get(we)
    assert shown["object"] == "webhook_endpoint" and shown["id"].startswith("we_")
    assert (shown["url"], shown["enabled_events"], shown["status"]) == (
        "https://93.184.215.14/hooks",
        ["invoice.paid", "invoice.finalized"],
        "enabled",
    )
    with read_session() as session:
        listed = list_objects(session, "webhook_endpoints")
    assert [e["id"] for e in listed["data"]] == [we]
    assert secret not in json.dumps(shown) + json.dumps(listed)


def test_update_changes_url_events_and_status_and_delete_hides_it(allow_private: None) -> None:
    we = endpoint()
    call(
        UPDATE, webhook_endpoint=we, url="https://[2606:4700::1111]/new", enabled_events=["customer.created"]
    )
    call(UPDATE, webhook_endpoint=we, disabled=True)
    shown = get(we)
    assert (shown["url"], shown["enabled_events"], shown["status"]) == (
        "https://[2606:4700::1111]/new",
        ["customer.created"],
        "disabled",
    )
    call(UPDATE, webhook_endpoint=we, disabled=False)
    assert get(we)["status"] == "enabled"
    call(DELETE, webhook_endpoint=we)
    assert get(we) == {"id": we, "object": "webhook_endpoint", "deleted": True}
    with read_session() as session:
        assert list_objects(session, "webhook_endpoints")["data"] == []
    with pytest.raises(NotFound) as gone:
        call(UPDATE, webhook_endpoint=we, disabled=True)
    assert (gone.value.field, gone.value.deleted) == ("webhook_endpoint", True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hooks",
        "http://localhost/hooks",
        "http://[::1]/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hooks",
        "http://192.168.0.10/hooks",
        "http://224.0.0.1/hooks",
        "http://0.0.0.0/hooks",
    ],
)
def test_private_destinations_are_refused_unless_allowed(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadRequest) as refused:
        endpoint(url)
    assert refused.value.field == "url"
    assert "BILLING_WEBHOOKS_ALLOW_PRIVATE" in refused.value.message
    monkeypatch.setenv("BILLING_WEBHOOKS_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    assert endpoint(url)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(BadRequest) as refused:
        endpoint("https://no-such-host.invalid/hooks")
    assert refused.value.field == "url"


def test_the_cli_creates_an_endpoint_and_shows_its_secret_once(allow_private: None) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli, ["webhooks", "create", "--url", "https://93.184.215.14/h", "--event", "invoice.paid"]
    )
    assert created.exit_code == 0, created.output
    shown = json.loads(created.output)
    assert shown["secret"].startswith("whsec_") and shown["enabled_events"] == ["invoice.paid"]
    listed = runner.invoke(cli, ["webhooks", "list"])
    assert shown["id"] in listed.output and shown["secret"] not in listed.output
    updated = runner.invoke(cli, ["webhooks", "update", shown["id"], "--disable"])
    assert json.loads(updated.output)["status"] == "disabled"
    assert shown["secret"] not in updated.output
    deleted = runner.invoke(cli, ["webhooks", "delete", shown["id"]])
    assert json.loads(deleted.output)["deleted"] is True


def test_a_refused_create_keeps_no_secret_in_its_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    from worker.app import app
    from worker.tables import TaskFailure

    app.loader.import_default_modules()
    secret = new_signing_secret()
    payload = {
        "id": new_id("we"),
        "url": "http://127.0.0.1/hooks",
        "enabled_events": ["*"],
        "secret": secret,
        "idempotency_key": new_id("req"),
    }
    with caplog.at_level(logging.DEBUG):
        result = app.tasks[CREATE].apply(kwargs=payload)
    assert result.failed()
    with read_session() as session:
        (failure,) = session.execute(select(TaskFailure)).scalars().all()
    assert failure.payload is not None and failure.payload["secret"] == "(redacted)"
    assert secret not in json.dumps(failure.payload) and secret not in caplog.text


# -- the sender, against real servers on 127.0.0.1 --------------------------------------------------


def test_a_delivery_is_signed_and_a_non_2xx_is_a_failed_try() -> None:
    secret = new_signing_secret()
    body = json.dumps({"id": "evt_X", "object": "event"}).encode()
    with Receiver(secret=secret, answers=[500, 200]) as receiver:
        headers = {SIGNATURE_HEADER: signature_header(body, secret, int(__import__("time").time()))}
        first = post(receiver.url, body, headers, timeout=5, allow_private=True)
        second = post(receiver.url, body, headers, timeout=5, allow_private=True)
    assert (first.ok, first.status, first.error) == (False, 500, "HTTP 500: not 2xx")
    assert (second.ok, second.status) == (True, 200)
    assert [r.verified for r in receiver.received] == [True, True]
    assert verify_signature(receiver.received[1].body, receiver.received[1].headers[SIGNATURE_HEADER], secret)


def test_the_sender_refuses_private_addresses_at_delivery_time_too() -> None:
    """An endpoint made while its host was public, then re-pointed (DNS rebinding): the address
    is checked again when sending, and nothing is sent."""
    with Receiver() as receiver:
        sent = post(receiver.url, b"{}", {}, timeout=5, allow_private=False)
    assert (sent.ok, sent.status) == (False, None)
    assert "loopback" in (sent.error or "")
    assert receiver.received == []


def test_a_receiver_slower_than_the_timeout_is_a_failed_try() -> None:
    with Receiver(answers=[("sleep", 3.0, 200)]) as receiver:
        sent = post(receiver.url, b"{}", {}, timeout=0.5, allow_private=True)
    assert (sent.ok, sent.status) == (False, None)
    assert sent.error == "timed out after 0.5 s"
    assert sent.duration_ms < 2500


class _Raw(BaseHTTPRequestHandler):
    status = 200
    location: str | None = None
    body = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(self.status)
        if self.location:
            self.send_header("Location", self.location)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def raw_server() -> Iterator[tuple[str, type[_Raw]]]:
    handler = type("Handler", (_Raw,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


def test_a_redirect_is_not_followed(raw_server: tuple[str, type[_Raw]]) -> None:
    url, handler = raw_server
    with Receiver() as target:
        handler.status, handler.location = 307, target.url
        sent = post(url, b"{}", {}, timeout=5, allow_private=True)
    assert (sent.ok, sent.status) == (False, 307)
    assert "redirect (not followed)" in (sent.error or "")
    assert target.received == []


def test_a_huge_response_is_read_only_up_to_the_bound(raw_server: tuple[str, type[_Raw]]) -> None:
    url, handler = raw_server
    handler.body = b"x" * (50 * MAX_RESPONSE_BYTES)
    sent = post(url, b"{}", {}, timeout=5, allow_private=True)
    assert (sent.ok, sent.status) == (True, 200)
    assert sent.excerpt is not None and len(sent.excerpt) <= 500


def test_a_closed_port_is_a_failed_try_with_its_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sent = post(f"http://127.0.0.1:{port}/", b"{}", {}, timeout=2, allow_private=True)
    assert (sent.ok, sent.status) == (False, None)
    assert "ConnectionRefusedError" in (sent.error or "")


# -- deliveries: fan-out with the event, tries, retries, bounds ---------------------------------------


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The worker's clock, moved forward by ``later[0]`` seconds (the signature keeps real time)."""
    import time

    from worker import clock

    offset = [0.0]
    monkeypatch.setattr(clock, "_source", lambda: time.time() + offset[0])
    return offset


def deliver_all(follow_ups: list[Any]) -> list[dict[str, Any]]:
    """Run the delivery follow-ups as the webhooks queue's worker would."""
    from tasks.contracts import WebhookDeliver, parse
    from worker.services.webhooks import deliver

    results = []
    for follow_up in follow_ups:
        assert follow_up.task_name == "billing.webhooks.deliver"
        command = parse(WebhookDeliver, dict(follow_up.payload))
        assert isinstance(command, WebhookDeliver)
        results.append(deliver(command))
    return results


def due_follow_ups() -> list[Any]:
    """What the dispatch sweep (beat) publishes now."""
    from worker import clock
    from worker.db import UnitOfWork
    from worker.services.webhooks import dispatch

    with UnitOfWork() as uow:
        follow_ups, _ = dispatch(uow.session, clock.now(), get_settings(), None)
        uow.commit()
    return follow_ups


def deliveries() -> list[Any]:
    from worker.tables import WebhookDelivery

    with read_session() as session:
        return list(session.execute(select(WebhookDelivery).order_by(WebhookDelivery.created)).scalars())


def test_events_fan_out_to_the_endpoints_that_receive_them_in_their_transaction(allow_private: None) -> None:
    wants = endpoint(events=["customer.created"])
    everything = endpoint(events=["*"])
    endpoint(events=["invoice.*"])
    off = endpoint(events=["*"])
    call(UPDATE, webhook_endpoint=off, disabled=True)

    outcome = call("billing.customers.create", name="Ada")

    rows = deliveries()
    assert sorted(r.endpoint_id for r in rows) == sorted([wants, everything])
    assert {r.status for r in rows} == {"pending"}
    (event_id,) = {r.event_id for r in rows}
    assert get(event_id)["type"] == "customer.created"
    assert sorted(f.payload["delivery"] for f in outcome.follow_ups) == sorted(r.id for r in rows)


def test_a_receiver_answering_500_then_200_gets_the_event_twice_signed_and_it_is_recorded(
    allow_private: None, later: list[float], runner: CliRunner
) -> None:
    secret = new_signing_secret()
    with Receiver(secret=secret, answers=[500]) as receiver:
        we = endpoint(receiver.url, ["customer.created"], secret=secret)
        outcome = call("billing.customers.create", name="Bea")
        (first,) = deliver_all(outcome.follow_ups)
        assert (first["http_status"], first["status"]) == (500, "pending")
        assert due_follow_ups() == []  # not due before the first wait of the schedule
        later[0] += get_settings().webhook_retry_schedule_s[0]
        (second,) = deliver_all(due_follow_ups())
        assert (second["http_status"], second["status"]) == (200, "succeeded")
        assert deliver_all(outcome.follow_ups)[0]["sent"] is False  # a duplicate message sends nothing
    (event_id,) = {r.event["id"] for r in receiver.received}
    assert [r.verified for r in receiver.received] == [True, True]
    assert receiver.received[0].event == json.loads(json.dumps(get(event_id)))
    attempts = json.loads(runner.invoke(cli, ["webhooks", "attempts", we]).output)["data"]
    assert [(a["attempt"], a["status"], a["http_status"]) for a in attempts] == [
        (2, "succeeded", 200),
        (1, "failed", 500),
    ]
    assert all(a["duration_ms"] is not None and a["event"] == event_id for a in attempts)
    by_event = json.loads(runner.invoke(cli, ["webhooks", "attempts", event_id]).output)["data"]
    assert [a["id"] for a in by_event] == [a["id"] for a in attempts]
    assert secret not in json.dumps(attempts)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_a_delivery_fails_for_good_when_its_schedule_is_spent_and_a_failing_endpoint_is_disabled(
    allow_private: None, later: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_WEBHOOK_RETRY_SCHEDULE_S", "[60, 600]")
    monkeypatch.setenv("BILLING_WEBHOOK_DISABLE_AFTER_S", "3600")
    get_settings.cache_clear()
    with Receiver(answers=[503] * 10) as receiver:
        we = endpoint(receiver.url, ["customer.created"])
        deliver_all(call("billing.customers.create", name="Chloé").follow_ups)
        for wait in (60, 600):
            later[0] += wait
            deliver_all(due_follow_ups())
        (row,) = deliveries()
        assert (row.status, row.attempts) == ("failed", 3)
        assert get(we)["status"] == "enabled"  # failing for 11 minutes: not yet
        second = call("billing.customers.create", name="Dan").follow_ups
        later[0] += 3600
        deliver_all(second)
    shown = get(we)
    assert shown["status"] == "disabled"
    assert "every delivery failed" in shown["disabled_reason"]
    assert len(receiver.received) == 4
    assert call("billing.customers.create", name="Eve").follow_ups == []  # disabled: nothing fanned out


def test_the_concurrency_bound_per_endpoint_defers_the_extra_try(
    allow_private: None, later: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import clock
    from worker.services.webhooks import claim

    monkeypatch.setenv("BILLING_WEBHOOK_MAX_CONCURRENCY", "1")
    get_settings.cache_clear()
    with Receiver() as receiver:
        endpoint(receiver.url, ["customer.created"])
        one = call("billing.customers.create", name="One").follow_ups
        two = call("billing.customers.create", name="Two").follow_ups
        taken = claim(one[0].payload["delivery"], clock.now(), get_settings())  # in flight, not answered
        assert not isinstance(taken, str)
        (deferred,) = deliver_all(two)
        assert deferred == {
            "delivery": two[0].payload["delivery"],
            "sent": False,
            "reason": "the endpoint has its bound of requests in flight: deferred",
        }
        assert receiver.received == []


def test_a_try_cut_short_is_abandoned_and_tried_again_once_its_claim_expires(
    allow_private: None, later: list[float]
) -> None:
    from worker import clock
    from worker.services.webhooks import claim

    with Receiver() as receiver:
        we = endpoint(receiver.url, ["customer.created"])
        follow_ups = call("billing.customers.create", name="Lost").follow_ups
        assert not isinstance(claim(follow_ups[0].payload["delivery"], clock.now(), get_settings()), str)
        assert deliver_all(follow_ups)[0]["reason"] == "another worker is sending it"
        assert due_follow_ups() == []
        settings = get_settings()
        later[0] += settings.webhook_timeout_s + settings.webhook_claim_margin_s + 1  # its worker is gone
        (again,) = deliver_all(due_follow_ups())
    assert again["status"] == "succeeded"
    with read_session() as session:
        from worker.views import webhook_attempts

        attempts = webhook_attempts(session, we)["data"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(2, "succeeded"), (1, "abandoned")]
    assert len(receiver.received) == 1


def test_resend_makes_a_new_delivery_to_the_endpoint_named(allow_private: None, runner: CliRunner) -> None:
    with Receiver() as receiver:
        we = endpoint(receiver.url, ["customer.created"])
        deliver_all(call("billing.customers.create", name="Res").follow_ups)
        (event_id,) = receiver.event_ids()
        result = runner.invoke(cli, ["events", "resend", event_id, "--endpoint", we])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["deliveries"][0]["status"] == "succeeded"
    assert receiver.event_ids() == [event_id, event_id]
    assert len(deliveries()) == 2


def test_the_audit_checks_every_delivery_against_its_attempts(
    allow_private: None, later: list[float]
) -> None:
    from sqlalchemy import update

    from worker.audit import audit_database
    from worker.db import UnitOfWork
    from worker.tables import WebhookDelivery

    with Receiver(answers=[500]) as receiver:
        endpoint(receiver.url, ["customer.created"])
        deliver_all(call("billing.customers.create", name="Audited").follow_ups)
        later[0] += get_settings().webhook_retry_schedule_s[0]
        deliver_all(due_follow_ups())
    assert audit_database() == []
    with UnitOfWork() as uow:  # the books say one try where two were recorded
        uow.session.execute(update(WebhookDelivery).values(attempts=1))
        uow.commit()
    (violation,) = audit_database()
    assert (violation.check, violation.detail) == (
        "webhook_delivery_attempts",
        "succeeded after 1 tries, 2 recorded, 1 succeeded",
    )


def test_the_purge_forgets_finished_deliveries_after_their_retention(
    allow_private: None, later: list[float]
) -> None:
    from worker import clock
    from worker.db import UnitOfWork
    from worker.services.maintenance import purge
    from worker.tables import WebhookAttempt

    with Receiver() as receiver:
        we = endpoint(receiver.url, ["customer.created"])
        deliver_all(call("billing.customers.create", name="Old").follow_ups)
        pending = call("billing.customers.create", name="Pending").follow_ups  # never tried
    later[0] += get_settings().webhook_history_retention_s + 1
    with UnitOfWork() as uow:
        purge(uow.session, clock.now(), get_settings())
        uow.commit()
    assert [d.id for d in deliveries()] == [pending[0].payload["delivery"]]
    with read_session() as session:
        assert session.execute(select(WebhookAttempt)).first() is None
    assert get(we)["status"] == "enabled"


def test_a_request_failed_event_reaches_its_endpoint_through_the_sweep(allow_private: None) -> None:
    """Events written outside a request (a dead letter's ``request.failed``, beat's overdue and
    upcoming invoices) have their deliveries written with them; the dispatch sweep sends them."""
    from worker.app import app

    app.loader.import_default_modules()
    with Receiver() as receiver:
        endpoint(receiver.url, ["request.failed"])
        refused = app.tasks["billing.customers.create"].apply(
            kwargs={"id": new_id("cus"), "idempotency_key": new_id("req"), "currency": "usd?"}
        )
        assert refused.failed()
        (pending,) = deliveries()
        assert (pending.status, pending.dispatched_at) == ("pending", None)
        deliver_all(due_follow_ups())
    (received,) = receiver.received
    assert received.event["type"] == "request.failed"
    assert received.event["data"]["object"]["error"]["field"] == "currency"


def test_a_try_answered_after_its_claim_expired_stays_abandoned(
    allow_private: None, later: list[float]
) -> None:
    """A try slower than its claim (timeout + margin) has been taken over: its late answer is kept
    with it, but only the try that took over decides the delivery (one success, never two)."""
    from worker import clock
    from worker.audit import audit_database
    from worker.services.webhooks import claim, record
    from worker.webhooks import Sent

    with Receiver() as receiver:
        endpoint(receiver.url, ["customer.created"])
        follow_ups = call("billing.customers.create", name="Late").follow_ups
        settings = get_settings()
        slow = claim(follow_ups[0].payload["delivery"], clock.now(), settings)
        assert not isinstance(slow, str)
        later[0] += settings.webhook_timeout_s + settings.webhook_claim_margin_s + 1
        (again,) = deliver_all(due_follow_ups())
        assert again["status"] == "succeeded"
        assert record(slow, Sent(200, None, 99_000), clock.now(), settings) == "succeeded"
    with read_session() as session:
        from worker.views import webhook_attempts

        tries = webhook_attempts(session, receiver.received[0].event["id"])["data"]
    assert [(a["attempt"], a["status"], a["http_status"]) for a in tries] == [
        (2, "succeeded", 200),
        (1, "abandoned", 200),
    ]
    assert tries[1]["error"] == "answered after its claim expired: HTTP 200"
    assert audit_database() == []
