"""The layering promise: a producer needs Celery, not the worker or a database driver.

``tasks/`` imports ``domain/`` and Celery, kombu and pydantic only (README: Layout). Each
probe runs in a fresh interpreter, since this test process has long since imported the
worker (tests/conftest.py does), and lists what a producer's imports and one sent message
pulled into ``sys.modules``. The control probe imports the worker and must find the
forbidden modules, so the check is shown to see them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("sqlalchemy", "sqlmodel", "alembic", "psycopg", "psycopg2", "worker")

PRODUCER = """
import tasks.client, tasks.operations, tasks.contracts
billing = tasks.client.BillingClient(broker_url="memory://localhost/")
billing.create_customer(email="ada@example.com")  # sending may import more: it must not be these
billing.app.close()
"""


def imported_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def forbidden(modules: set[str]) -> set[str]:
    return {name for name in modules if name.partition(".")[0] in FORBIDDEN}


PROBES = {
    "client": ("import tasks.client", "tasks.client"),
    "operations": ("import tasks.operations", "tasks.operations"),
    "contracts": ("import tasks.contracts", "tasks.contracts"),
    "broker-and-ids": ("import tasks.broker, tasks.ids", "tasks.broker"),
    "client-sends": (PRODUCER, "kombu.transport.memory"),
}


@pytest.mark.parametrize(("code", "loaded"), PROBES.values(), ids=PROBES.keys())
def test_a_producer_imports_neither_the_worker_nor_a_database(code: str, loaded: str) -> None:
    modules = imported_after(code)
    assert loaded in modules  # the probe ran what it says
    assert forbidden(modules) == set()


def test_the_operations_table_needs_no_celery() -> None:
    """Other services read the table as the list of what they may send (its docstring)."""
    modules = imported_after("import tasks.operations")
    assert {name.partition(".")[0] for name in modules} & {"celery", "kombu", "redis"} == set()


def test_the_probe_sees_the_worker_when_it_is_imported() -> None:
    found = {name.partition(".")[0] for name in forbidden(imported_after("import worker.app"))}
    assert {"sqlalchemy", "sqlmodel", "worker"} <= found
