"""``billing bench --smoke``: the benchmark runs end to end (tiny sizes; figures not checked).

Each backend runs in a child process with real workers (PostgreSQL + Redis) or the
embedded worker (SQLite); every run of the project's paths must end with the audit clean.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL
from worker.devtools.bench import Options, run_bench

pytestmark = pytest.mark.slow

SMOKE = {"items": 1_000, "single": 100, "naive": 50, "sizes": (500, 1_000)}


def check(code: int, table: str) -> None:
    assert code == 0, table
    lines = table.splitlines()
    assert any(line.startswith("| ingest: list call") for line in lines), table
    assert any(line.startswith("| generation 1,000: worker") for line in lines), table
    audit = next(line for line in lines if line.startswith("| audit violations"))
    assert audit.split("|")[2].strip() == "0", table


def test_bench_smoke_on_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLING_DATABASE_URL", raising=False)
    check(*run_bench(Options.smoke(**SMOKE), ("sqlite",), print))


@pytest.mark.postgres
@pytest.mark.redis
def test_bench_smoke_on_postgres_and_redis(
    postgres_database: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", POSTGRES_ADMIN_URL)
    monkeypatch.setenv("BILLING_BROKER_URL", redis_url)
    options = Options.smoke(
        **SMOKE,
        redis_db=int(make_url(redis_url).database or 0),  # the tests' own Redis database
        database=f"billing_bench_smoke_{uuid.uuid4().hex[:8]}",
    )
    check(*run_bench(options, ("postgres",), print))


@pytest.mark.postgres
@pytest.mark.redis
def test_the_documents_drain_benchmark_runs(postgres_database: str, redis_url: str) -> None:
    """``bench_documents --drain``: invoices made, their document requests queued, a real document
    worker drains them; figures printed, not checked."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "BILLING_DATABASE_URL": POSTGRES_ADMIN_URL, "BILLING_BROKER_URL": redis_url}
    database = f"billing_bench_documents_{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "worker.devtools.bench_documents", "--drain", "3", "--minutes", "2"]
    command += ["--database", database, "--redis-db", str(int(make_url(redis_url).database or 0))]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "documents stored: 3 of 3" in done.stdout and "(drained)" in done.stdout, done.stdout
    assert "pool process peak" in done.stdout, done.stdout
