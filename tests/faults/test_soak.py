"""A short soak in CI: random operations and faults, then nothing lost and the audit clean.

``billing soak --minutes N`` is the long form; this keeps its code working and catches a
regression that only random interleavings of faults find.
"""

from __future__ import annotations

import pytest
import redis as redis_lib

from worker.devtools.soak import Soak
from worker.settings import get_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def test_a_short_soak_loses_nothing_and_audits_clean(
    postgres: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_lib.Redis.from_url(redis_url).flushdb()
    monkeypatch.setenv("BILLING_BROKER_URL", redis_url)
    get_settings.cache_clear()
    report: list[str] = []
    soak = Soak(minutes=0.5, seed=7, workers=2, echo=report.append)
    code = soak.run()
    print("\n".join(report))
    assert code == 0, "\n".join(report)
    assert any("items lost 0; audit violations 0" in line for line in report)
    assert soak.faults["restarts"] > 0 and soak.faults["kill_child"] + soak.faults["kill_worker"] > 0, (
        soak.faults
    )
    assert soak.items_sent > 1000
