"""Private servers for the tests that restart one: never the servers the suite was given."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import empty_tables, missing
from tests.faults.harness import PostgresServer, Unavailable
from worker.db import dispose_engines
from worker.migrate import upgrade
from worker.settings import get_settings


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster this session starts (initdb + pg_ctl), removed at the end."""
    try:
        server = PostgresServer()
    except Unavailable as exc:
        missing(f"cannot start a private PostgreSQL: {exc}")
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def private_postgres_database(private_postgres: PostgresServer) -> str:
    admin = create_engine(private_postgres.admin_url, isolation_level="AUTOCOMMIT")
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    dispose_engines()
    return url  # dropped with the cluster


@pytest.fixture
def private_postgres_url(private_postgres_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The private cluster's database, on empty tables, as the settings' database."""
    empty_tables(private_postgres_database)
    monkeypatch.setenv("BILLING_DATABASE_URL", private_postgres_database)
    get_settings.cache_clear()
    dispose_engines()
    return private_postgres_database
