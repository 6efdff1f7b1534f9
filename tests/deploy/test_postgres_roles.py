"""deploy/postgres/roles.sql on a real server: the migrator migrates, the application role bills
with rows only, and a table a later migration adds is the application's too, with no new grant."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ProgrammingError

from tests.conftest import POSTGRES_ADMIN_URL, unavailable
from tests.deploy.files import DEPLOY
from tests.support import customer, items, run_chain
from worker.db import dispose_engines
from worker.migrate import upgrade
from worker.settings import get_settings

pytestmark = pytest.mark.postgres


def psql(url: str, *args: str) -> None:
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    result = subprocess.run(
        [shutil.which("psql") or "psql", libpq, "-X", "-q", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def roles() -> Iterator[dict[str, str]]:
    """A fresh database with the two roles (names made unique: roles belong to the whole server)."""
    suffix = uuid.uuid4().hex[:8]
    names = {"migrator": f"billing_migrator_{suffix}", "app": f"billing_app_{suffix}"}
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    database = f"billing_roles_{suffix}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    except Exception as exc:
        admin.dispose()
        unavailable("PostgreSQL", exc)
    url = admin.url.set(database=database)
    try:
        psql(
            url.render_as_string(hide_password=False),
            *("-v", f"migrator={names['migrator']}", "-v", "migrator_password=m-pw"),
            *("-v", f"app={names['app']}", "-v", "app_password=a-pw"),
            *("-f", str(DEPLOY / "postgres" / "roles.sql")),
        )
        yield {
            role: url.set(username=name, password=f"{role[0]}-pw").render_as_string(hide_password=False)
            for role, name in names.items()
        } | {"admin": url.render_as_string(hide_password=False), **{f"{r}_name": n for r, n in names.items()}}
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            for name in names.values():
                connection.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="module")
def migrated(roles: dict[str, str]) -> dict[str, str]:
    upgrade(roles["migrator"])
    dispose_engines()
    return roles


def test_neither_role_is_privileged(roles: dict[str, str]) -> None:
    engine = create_engine(roles["admin"])
    with engine.connect() as connection:
        flags = connection.execute(
            text(
                "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls"
                " FROM pg_roles WHERE rolname IN (:m, :a)"
            ),
            {"m": roles["migrator_name"], "a": roles["app_name"]},
        ).scalars()
        assert list(flags) == [False, False]
    engine.dispose()


def test_the_app_role_bills_with_rows_only(migrated: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", migrated["app"])
    get_settings.cache_clear()
    dispose_engines()
    who = customer("usd")
    items(who, "usd", [1200, 300])
    assert len(run_chain(who)) == 1
    engine = create_engine(migrated["app"])
    with engine.connect() as connection:
        for ddl in ("CREATE TABLE intruder (id int)", "ALTER TABLE customers ADD COLUMN x int"):
            with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                connection.execute(text(ddl))
            connection.rollback()
    engine.dispose()


def test_a_later_migration_needs_no_new_grant(migrated: dict[str, str]) -> None:
    migrator = create_engine(migrated["migrator"])
    with migrator.begin() as connection:
        connection.execute(text("CREATE TABLE later_feature (id bigserial PRIMARY KEY, note text)"))
    migrator.dispose()
    app = create_engine(migrated["app"])
    with app.begin() as connection:
        connection.execute(text("INSERT INTO later_feature (note) VALUES ('ok')"))
        connection.execute(text("UPDATE later_feature SET note = 'still ok'"))
        assert connection.execute(text("SELECT count(*) FROM later_feature")).scalar() == 1
        connection.execute(text("DELETE FROM later_feature"))
    app.dispose()
