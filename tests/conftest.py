"""Shared fixtures: a clean environment, and migrated SQLite and PostgreSQL databases.

Servers: PostgreSQL at BILLING_TEST_POSTGRES_URL (an admin URL; each test session
creates and drops its own database) and Redis at BILLING_TEST_REDIS_URL. When one is
unreachable its tests are skipped on a laptop, and fail under CI (CI=true) or with
BILLING_REQUIRE_SERVICES=1: a suite that silently skips its real-server tests proves
nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

import worker.tables  # noqa: F401  (registers the tables)
from worker.db import dispose_engines
from worker.migrate import upgrade
from worker.settings import get_settings

POSTGRES_ADMIN_URL = os.environ.get(
    "BILLING_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BILLING_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# No settings from a developer's .env file, even in session fixtures set up before
# clean_environment runs (README: Tests).
os.environ["BILLING_ENV_FILE"] = ""
REQUIRE_SERVICES = (
    os.environ.get("CI", "").lower() == "true" or os.environ.get("BILLING_REQUIRE_SERVICES") == "1"
)


def unavailable(what: str, error: BaseException) -> NoReturn:
    missing(f"{what} unreachable: {type(error).__name__}: {error}")


def missing(message: str) -> NoReturn:
    """Skip on a laptop; fail under CI, where every test must run."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (required under CI; start it, see .ci/run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings come from the environment: no test sees the developer's BILLING_* variables,
    nor a .env file (BILLING_ENV_FILE empty: read by no process the tests start either)."""
    for name in list(os.environ):
        if name.startswith("BILLING_") and not name.startswith("BILLING_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BILLING_ENV_FILE", "")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('db')) / 'billing.db'}"
    upgrade(url)
    dispose_engines()
    return url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", exc)
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        dispose_engines()
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_tables(url: str) -> None:
    engine = create_engine(url)
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                connection.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The same test on the embedded default and on PostgreSQL, each on empty tables."""
    url: str = request.getfixturevalue(f"{request.param}_database")
    empty_tables(url)
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    get_settings.cache_clear()
    dispose_engines()
    return url


@pytest.fixture
def postgres(postgres_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL only: for behaviour that depends on its locking."""
    empty_tables(postgres_database)
    monkeypatch.setenv("BILLING_DATABASE_URL", postgres_database)
    get_settings.cache_clear()
    dispose_engines()
    return postgres_database


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", exc)
    finally:
        client.close()
    return REDIS_URL
