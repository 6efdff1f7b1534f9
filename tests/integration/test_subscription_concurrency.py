"""Subscriptions under concurrency, on PostgreSQL only (its row locks and SKIP LOCKED)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from tests.integration.test_subscriptions import MONTH_START, deliver, price, subscribe, tick, ts
from tests.support import customer
from worker import clock
from worker.audit import audit_database
from worker.db import read_session
from worker.services import maintenance
from worker.tables import Invoice, SubscriptionPeriod

pytestmark = pytest.mark.postgres


@pytest.mark.usefixtures("postgres")
def test_two_beats_and_duplicate_deliveries_at_once_bill_each_period_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two beat processes tick at the same moment and workers run each renewal twice, all
    concurrently, on PostgreSQL: every subscription gets exactly one invoice for April."""
    now = [ts(MONTH_START)]
    monkeypatch.setattr(clock, "_source", lambda: float(now[0]))
    pro = price(1500)
    subs = [subscribe(customer("usd"), pro).id for _ in range(12)]
    now[0] = ts("2026-04-01 10:00:01")
    barrier, published, errors = threading.Barrier(4), [], []

    def beat() -> None:
        try:
            barrier.wait()
            mine = tick(maintenance.renew_subscriptions)
            published.extend(mine)
            deliver(mine)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def duplicate_worker() -> None:
        try:
            barrier.wait()
            for sub in subs:
                deliver([maintenance.renewal(sub, ts("2026-04-01 10:00:00"))])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (beat, beat, duplicate_worker, duplicate_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    asked = [f.payload["subscription"] for f in published]
    assert len(asked) == len(set(asked))  # the two beats never asked for the same renewal (SKIP LOCKED)
    with read_session() as session:
        billed = session.execute(select(SubscriptionPeriod.subscription_id)).scalars().all()
        cycle = (
            session.execute(
                select(Invoice.subscription_id).where(Invoice.billing_reason == "subscription_cycle")
            )
            .scalars()
            .all()
        )
    assert sorted(billed) == sorted(subs * 2)
    assert sorted(cycle) == sorted(subs)
    assert audit_database() == []
