"""The stored status values are the domain's: the migrations (history, never edited) and the
tables' check constraints list exactly ``InvoiceStatus``, ``CreditNoteStatus`` and
``SubscriptionStatus``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint

from domain.credit_notes import CreditNoteStatus
from domain.invoices import InvoiceStatus
from domain.subscriptions import SubscriptionStatus
from worker import tables

VERSIONS = Path(tables.__file__).parent / "migrations" / "versions"
_CHECK = re.compile(r'sa\.CheckConstraint\(\s*"([^"]*)",\s*name=op\.f\("(ck_\w+)"\)')


def migrated_checks() -> dict[str, str]:
    """Every check constraint the migrations create: name -> its SQL text."""
    found: dict[str, str] = {}
    for path in sorted(VERSIONS.glob("*.py")):
        found.update({name: sql for sql, name in _CHECK.findall(path.read_text())})
    return found


def table_checks() -> dict[str, str]:
    """Every check constraint of the tables (named by the naming convention): name -> SQL text."""
    return {
        str(constraint.name): str(constraint.sqltext)
        for table in tables.SQLModel.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, CheckConstraint)
    }


def listed(sql: str) -> list[str]:
    return re.findall(r"'([^']*)'", sql)


@pytest.mark.parametrize(
    ("name", "statuses"),
    [
        pytest.param("ck_invoices_status_valid", InvoiceStatus, id="invoices"),
        pytest.param("ck_credit_notes_status_valid", CreditNoteStatus, id="credit-notes"),
        pytest.param("ck_subscriptions_status_valid", SubscriptionStatus, id="subscriptions"),
    ],
)
def test_migrated_status_check_lists_the_enum(name: str, statuses: type[InvoiceStatus]) -> None:
    sql = migrated_checks()[name]
    assert sql.startswith("status IN (")
    assert listed(sql) == [status.value for status in statuses]


def test_only_drafts_go_unnumbered_in_the_migration() -> None:
    assert migrated_checks()["ck_invoices_finalized_numbered"] == (
        f"status = '{InvoiceStatus.DRAFT.value}' OR number IS NOT NULL"
    )


@pytest.mark.parametrize(
    "name", ["ck_invoices_status_valid", "ck_invoices_finalized_numbered", "ck_credit_notes_status_valid"]
)
def test_tables_check_what_the_migration_checks(name: str) -> None:
    assert table_checks()[name] == migrated_checks()[name]


def test_status_values_are_the_stored_and_shown_ones() -> None:
    assert [s.value for s in InvoiceStatus] == ["draft", "open", "paid", "void", "uncollectible"]
    assert [s.value for s in CreditNoteStatus] == ["issued", "void"]
    assert tables.Invoice().status == "draft"
    assert tables.CreditNote().status == "issued"
