"""Engine and units of work.

The engine is made lazily and per process: a Celery prefork child must not reuse
connections its parent opened, so ``get_engine`` starts afresh when the pid changes.

SQLite: every transaction starts with ``BEGIN IMMEDIATE`` so that two writers queue up
at the start instead of failing on lock upgrade halfway through. PostgreSQL: services
lock the customer row (``SELECT … FOR UPDATE``) and ``lock_timeout`` bounds the wait;
``statement_timeout`` bounds every statement, below the task's soft time limit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from worker.settings import get_settings

_engines: dict[str, tuple[int, Engine]] = {}


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if make_url(url).database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    settings = get_settings()
    # No pre-ping (a round trip before every transaction): a connection that died with its
    # server fails its first statement, SQLAlchemy then discards the whole pool, and the
    # task retries as after any transient error (the PostgreSQL-restart fault test).
    return create_engine(
        url,
        pool_size=settings.database_pool_size,
        connect_args={
            "options": f"-c lock_timeout={settings.lock_timeout_ms}"
            f" -c statement_timeout={settings.statement_timeout_ms}"
        },
    )


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    pid = os.getpid()
    known = _engines.get(url)
    if known is None or known[0] != pid:
        if known is not None:
            known[1].dispose(close=False)  # the parent's connections belong to the parent
        _engines[url] = (pid, make_engine(url))
    return _engines[url][1]


def dispose_engines(*, close: bool = True) -> None:
    """Drop every engine, closing its connections."""
    for _, engine in _engines.values():
        engine.dispose(close=close)
    _engines.clear()


def forget_inherited_engines() -> None:
    """In a forked child: drop the engines the parent made, without closing the parent's
    sockets. Engines of this process are kept (Celery's in-process test worker sends
    ``worker_process_init`` too, in the process that owns them)."""
    pid = os.getpid()
    for url, (owner, engine) in list(_engines.items()):
        if owner != pid:
            engine.dispose(close=False)
            del _engines[url]


class UnitOfWork:
    """One database transaction. Rolls back unless ``commit()`` is called."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or get_engine()
        self.committed = False

    def __enter__(self) -> UnitOfWork:
        self.session = Session(self.engine, expire_on_commit=False)
        self.session.begin()
        return self

    def commit(self) -> None:
        self.session.commit()
        self.committed = True

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self.session.rollback()
        self.session.close()


@contextmanager
def read_session() -> Iterator[Session]:
    with Session(get_engine()) as session:
        yield session


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for statements that skip the ORM. (SQLModel sets
    ``__table__`` on a table model without declaring it, so reading that is untyped.)"""
    table = inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to one table")
    return table
