"""A client that does not know its broker says so, instead of sending to nowhere."""

from __future__ import annotations

import pytest

from tasks.client import BillingClient, BrokerNotConfigured


@pytest.mark.parametrize("value", [None, "", "  "])
def test_no_broker_url_is_an_error_not_the_in_process_broker(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("BILLING_BROKER_URL", raising=False)
    else:
        monkeypatch.setenv("BILLING_BROKER_URL", value)
    with pytest.raises(BrokerNotConfigured, match="BILLING_BROKER_URL"):
        BillingClient()


def test_the_url_comes_from_the_argument_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://127.0.0.1:1/3")
    assert BillingClient().app.conf.broker_url == "redis://127.0.0.1:1/3"
    assert BillingClient(broker_url="memory://localhost/").app.conf.broker_url == "memory://localhost/"
