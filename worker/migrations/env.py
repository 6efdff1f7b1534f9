"""Alembic environment: the schema is the SQLModel metadata; the URL comes from settings."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import worker.tables  # noqa: F401  (registers the tables)
from worker.db import get_engine
from worker.migrate import builds_here

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    engine = get_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=builds_here(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations()
