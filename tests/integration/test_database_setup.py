"""``billing db upgrade`` and ``billing demo`` create a missing PostgreSQL database (README:
Running it for real), or say in one line why they cannot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL, unavailable
from worker.cli import main
from worker.db import dispose_engines, get_engine
from worker.migrate import ensure_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def missing_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A URL naming a database that does not exist yet; dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"billing_test_created_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect():
            pass
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", exc)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_db_upgrade_creates_the_missing_database_then_migrates_it(missing_database: str) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["database created", "database at head"]
    assert "invoices" in inspect(get_engine(missing_database)).get_table_names()
    again = CliRunner().invoke(main, ["db", "upgrade"], catch_exceptions=False)
    assert again.output.splitlines() == ["database at head"]


def test_an_existing_database_is_left_alone(missing_database: str) -> None:
    assert ensure_database(missing_database) is True
    assert ensure_database(missing_database) is False


def test_sqlite_needs_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert ensure_database(f"sqlite:///{tmp_path / 'billing.db'}") is False
