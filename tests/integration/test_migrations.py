"""The schema the migrations build is the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from worker.db import get_engine
from worker.migrate import builds_here, downgrade, upgrade


def test_migrated_schema_matches_the_models(database: str) -> None:
    with get_engine(database).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": builds_here(connection.dialect.name)}
        )
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


def test_search_indexes(database: str) -> None:
    inspector = inspect(get_engine(database))
    assert "ix_credit_notes_customer_id" in {ix["name"] for ix in inspector.get_indexes("credit_notes")}
    metadata_indexes = [
        ix for ix in inspector.get_indexes("customers") if ix["name"] == "ix_customers_metadata"
    ]
    assert len(metadata_indexes) == (1 if inspector.dialect.name == "postgresql" else 0)


def test_pending_items_have_their_partial_index(database: str) -> None:
    indexes = {ix["name"]: ix for ix in inspect(get_engine(database)).get_indexes("invoice_items")}
    assert indexes["ix_invoice_items_pending"]["column_names"] == ["customer_id", "currency", "created", "id"]


@pytest.mark.usefixtures("clean_environment")
def test_downgrade_to_base_and_upgrade_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'roundtrip.db'}"
    upgrade(url)
    downgrade(url)
    assert inspect(get_engine(url)).get_table_names() == ["alembic_version"]
    upgrade(url)
    assert "invoices" in inspect(get_engine(url)).get_table_names()
