"""The settings the deploy files rely on: time limits, statement timeout, heartbeat, health."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import text

from worker.app import app
from worker.cli import main
from worker.db import get_engine
from worker.heartbeat import HeartbeatScheduler, WorkerHeartbeat
from worker.migrate import upgrade
from worker.settings import Settings, get_settings


def test_time_limits_reach_celery() -> None:
    settings = get_settings()
    assert app.conf.task_soft_time_limit == settings.task_soft_time_limit_s
    assert app.conf.task_time_limit == settings.task_time_limit_s
    assert app.conf.beat_scheduler == "worker.heartbeat:HeartbeatScheduler"
    assert WorkerHeartbeat in app.steps["consumer"]


@pytest.mark.parametrize(
    "values",
    [
        {"task_soft_time_limit_s": 300, "task_time_limit_s": 300},
        {"statement_timeout_ms": 240_000, "task_soft_time_limit_s": 240},
    ],
)
def test_limits_out_of_order_are_refused(values: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)


@pytest.mark.postgres
def test_statement_timeout_is_set_on_the_workers_connections(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_STATEMENT_TIMEOUT_MS", "1234")
    get_settings.cache_clear()
    with get_engine(postgres).connect() as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "1234ms"
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "10s"


def test_the_worker_touches_its_heartbeat_on_the_consumers_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    heartbeat = tmp_path / "heartbeat"
    monkeypatch.setenv("BILLING_HEARTBEAT_FILE", str(heartbeat))
    monkeypatch.setenv("BILLING_HEARTBEAT_INTERVAL_S", "7")
    get_settings.cache_clear()
    calls: list[Any] = []
    entry = SimpleNamespace(cancel=lambda: calls.append("cancelled"))
    timer = SimpleNamespace(call_repeatedly=lambda *a, **k: calls.append(a) or entry)
    step = WorkerHeartbeat(SimpleNamespace())
    step.start(SimpleNamespace(timer=timer))
    assert heartbeat.exists()
    ((interval, touch, args),) = calls
    os.utime(heartbeat, (0, 0))
    touch(*args)
    assert (interval, time.time() - heartbeat.stat().st_mtime < 60) == (7.0, True)
    step.stop(SimpleNamespace(timer=timer))
    assert calls[-1] == "cancelled"


def test_beat_touches_its_heartbeat_at_every_tick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    heartbeat = tmp_path / "heartbeat"
    monkeypatch.setenv("BILLING_HEARTBEAT_FILE", str(heartbeat))
    get_settings.cache_clear()
    scheduler = HeartbeatScheduler(app, schedule_filename=str(tmp_path / "schedule"), lazy=True)
    monkeypatch.setattr("celery.beat.PersistentScheduler.tick", lambda self, *a, **k: 5.0)
    assert scheduler.tick() == 5.0
    assert heartbeat.exists()


def test_health_reads_the_heartbeats_age(tmp_path: Path) -> None:
    heartbeat = tmp_path / "heartbeat"
    runner = CliRunner()
    missing = runner.invoke(main, ["health", "--heartbeat", str(heartbeat)])
    assert (missing.exit_code, "missing" in missing.output) == (1, True)
    heartbeat.touch()
    assert runner.invoke(main, ["health", "--heartbeat", str(heartbeat), "--max-age", "60"]).exit_code == 0
    os.utime(heartbeat, (time.time() - 120, time.time() - 120))
    stale = runner.invoke(main, ["health", "--heartbeat", str(heartbeat), "--max-age", "60"])
    assert (stale.exit_code, "120 s old" in stale.output) == (1, True)


def test_health_tells_whether_the_schema_is_at_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(main, ["health", "--schema"]).exit_code == 1
    upgrade(url)
    result = runner.invoke(main, ["health", "--schema"])
    assert (result.exit_code, result.output) == (0, "ok\n")
