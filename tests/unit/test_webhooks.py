"""Webhook rules and signatures (README: Webhooks), no fixtures."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from domain.errors import BadRequest
from domain.webhooks import next_retry_in, refused_address
from tasks.event_types import EVENT_TYPES, check_enabled_events, receives
from tasks.webhooks import (
    SignatureVerificationError,
    new_signing_secret,
    sign,
    signature_header,
    verify_signature,
)

SECRET = "whsec_" + "7" * 64
BODY = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid"}).encode()
T = 1_800_000_000


def test_the_signature_is_stripes_scheme_computed_independently() -> None:
    """HMAC-SHA256 keyed with the whole secret, over "<t>.<raw body>", hex: what Stripe's
    libraries (``compute_signature``) compute, so their verification accepts our header."""
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, T) == expected
    assert signature_header(BODY, SECRET, T) == f"t={T},v1={expected}"


def test_a_good_signature_verifies_and_returns_the_event() -> None:
    header = signature_header(BODY, SECRET, T)
    assert verify_signature(BODY, header, SECRET, now=T + 299)["id"] == "evt_1"
    assert verify_signature(BODY.decode(), header, SECRET, now=T - 299)["type"] == "invoice.paid"


def test_any_of_several_v1_signatures_may_match_as_during_a_secret_rotation() -> None:
    header = f"t={T},v1={sign(BODY, 'whsec_old', T)},v1={sign(BODY, SECRET, T)},v0=ignored"
    assert verify_signature(BODY, header, SECRET, now=T)["id"] == "evt_1"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(None, "malformed_header", id="missing"),
        pytest.param("", "malformed_header", id="empty"),
        pytest.param("v1=abc", "malformed_header", id="no-timestamp"),
        pytest.param(f"t=soon,v1={sign(BODY, SECRET, T)}", "malformed_header", id="bad-timestamp"),
        pytest.param(f"t={T}", "no_signature", id="no-v1"),
        pytest.param(f"t={T},v1={sign(BODY, 'whsec_other', T)}", "signature_mismatch", id="other-secret"),
        pytest.param(f"t={T + 1},v1={sign(BODY, SECRET, T)}", "signature_mismatch", id="timestamp-changed"),
        pytest.param(f"t={T},v1={sign(BODY + b' ', SECRET, T)}", "signature_mismatch", id="body-changed"),
    ],
)
def test_a_wrong_or_malformed_signature_is_refused(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureVerificationError) as refused:
        verify_signature(BODY, header, SECRET, now=T)
    assert refused.value.reason == reason


@pytest.mark.parametrize("skew", [301, -301, 86_400])
def test_a_stale_or_future_signature_is_refused(skew: int) -> None:
    header = signature_header(BODY, SECRET, T)
    with pytest.raises(SignatureVerificationError) as refused:
        verify_signature(BODY, header, SECRET, now=T + skew)
    assert refused.value.reason == "timestamp_outside_tolerance"
    assert verify_signature(BODY, header, SECRET, tolerance_s=None, now=T + skew)["id"] == "evt_1"


def test_signing_secrets_are_new_each_time_and_shaped_like_stripes() -> None:
    secrets = {new_signing_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("whsec_") and len(s) == 70 for s in secrets)


def test_enabled_events_accept_known_types_or_the_wildcard_alone() -> None:
    assert check_enabled_events(["invoice.paid", "customer.created"]) == ["invoice.paid", "customer.created"]
    assert check_enabled_events(["*"]) == ["*"]
    for names, field in (
        (["invoice.paid", "invoice.nope"], "enabled_events[1]"),
        (["invoice.paid", "invoice.paid"], "enabled_events[1]"),
        (["*", "invoice.paid"], "enabled_events"),
        ([], "enabled_events"),
    ):
        with pytest.raises(BadRequest) as refused:
            check_enabled_events(names)
        assert refused.value.field == field


def test_an_endpoint_receives_its_types_or_everything_with_the_wildcard() -> None:
    assert receives(["*"], "invoice.paid")
    assert receives(["invoice.paid"], "invoice.paid")
    assert not receives(["invoice.paid"], "invoice.voided")
    assert receives(["invoice.*"], "invoice.voided")
    assert not receives(["invoice.*"], "invoiceitem.created")
    assert check_enabled_events(["invoice.*", "customer.created"]) == ["invoice.*", "customer.created"]
    assert {"invoice.finalized", "request.failed", "customer.subscription.updated"} <= EVENT_TYPES


def test_the_retry_schedule_ends() -> None:
    schedule = [60, 300, 3600]
    assert [next_retry_in(schedule, n) for n in (1, 2, 3, 4)] == [60, 300, 3600, None]


def test_the_default_schedule_tries_for_about_three_days() -> None:
    from worker.settings import Settings

    schedule = Settings(_env_file=None).webhook_retry_schedule_s
    assert 2.5 * 86_400 <= sum(schedule) <= 3 * 86_400
    assert schedule == sorted(schedule)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "private"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ],
)
def test_addresses_webhooks_may_not_reach(address: str, reason: str | None) -> None:
    assert refused_address(address) == reason
