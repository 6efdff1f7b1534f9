"""Schema migrations (Alembic), run by ``billing db upgrade`` and by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from worker.settings import get_settings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return config


def builds_here(dialect: str) -> Callable[..., bool]:
    """An Alembic ``include_object`` filter: compare only what this dialect builds (an
    index declared with ``ddl_if(dialect=...)`` exists on that dialect alone)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


class DatabaseMissing(Exception):
    """The database the URL names does not exist and cannot be created with its role."""


def ensure_database(url: str | None = None) -> bool:
    """PostgreSQL: create the database the URL names when it does not exist (its role needs
    CREATEDB); True when it was created. SQLite makes its file by itself. README: Running it
    for real."""
    target = make_url(url or get_settings().database_url)
    if target.get_backend_name() != "postgresql" or not target.database:
        return False
    probe = create_engine(target, poolclass=NullPool)
    try:
        with probe.connect():
            return False
    except OperationalError as exc:
        if f'database "{target.database}" does not exist' not in str(exc.orig):
            raise
    finally:
        probe.dispose()
    return _create_database(target)


def _create_database(target: Any) -> bool:
    name, role = target.database, target.username or "(default role)"
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))
    except DBAPIError as exc:
        if "already exists" in str(exc.orig):  # another process made it first
            return False
        reason = str(exc.orig).strip().splitlines()[-1].removeprefix("FATAL:").strip()
        raise DatabaseMissing(
            f"database {name!r} does not exist and role {role!r} cannot create it ({reason}):"
            f" create it as an administrator, e.g. createdb -O {role} {name}"
        ) from None
    finally:
        admin.dispose()
    return True
