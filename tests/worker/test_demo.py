"""``billing demo``, the README's first command, prints the figures its story promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import count, get
from worker.db import read_session
from worker.devtools.demo import run_demo
from worker.settings import get_settings
from worker.tables import TaskFailure
from worker.views import list_objects

pytestmark = [pytest.mark.usefixtures("database"), pytest.mark.slow]


def invoices_of(customer: str) -> list[dict]:
    with read_session() as session:
        found = list_objects(session, "invoices", customer=customer, limit=100)["data"]
    return sorted(found, key=lambda inv: inv["number"])


def test_the_demo_tells_its_story_with_exact_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.app import app
    from worker.devtools.embedded import EmbeddedWorker

    monkeypatch.setenv("BILLING_DOCUMENTS_DIR", str(tmp_path / "documents"))
    monkeypatch.setenv("BILLING_EMAILS_DIR", str(tmp_path / "emails"))
    get_settings.cache_clear()

    EmbeddedWorker(app).purge()
    printed: list[str] = []
    run = run_demo(printed.append)
    people = run["customers"]

    bea = [
        (i["currency"], i["lines"]["total_count"], i["total"], i["amount_due"], i["status"])
        for i in invoices_of(people["Bea"])
    ]
    assert bea == [
        ("cad", 250, 237500, 232500, "open"),
        ("usd", 3, 8000, 8000, "open"),
        ("cad", 10, 9500, 9500, "paid"),
    ]
    assert get(people["Bea"], expand=["invoice_credit_balance"])["invoice_credit_balance"] == {"cad": 750}

    dan = [
        (i["currency"], i["billing_reason"], i["subtotal"], i["total"], i["status"])
        for i in invoices_of(people["Dan"])
    ]
    assert dan == [
        ("usd", "subscription_create", 6000, 4500, "open"),
        ("usd", "subscription_cycle", 6000, 4500, "open"),
        ("usd", "subscription_cycle", 6000, 4500, "open"),
        ("eur", "subscription_cycle", 5400, 5400, "open"),
        ("eur", "subscription_cycle", 5400, 5400, "open"),
    ]
    assert count(TaskFailure) == 0
    assert "Recorded task failures: 0" in printed
    # ten invoices and the credit note, in the customers' languages; two emails
    pdfs = sorted(path.name for path in (tmp_path / "documents").glob("*.pdf"))
    assert len(pdfs) == 11 and sum(name.startswith("Dan-") for name in pdfs) == 5
    assert f"Documents: 11 PDFs in {tmp_path / 'documents'}" in printed[-4]
    emails = [path.read_bytes() for path in (tmp_path / "emails").glob("*.eml")]
    assert len(emails) == 2
    assert any(b"Subject: Facture" in email and b"Content-Language: fr" in email for email in emails)


@pytest.mark.postgres
def test_the_demo_never_prints_a_password(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo prints the database and broker URLs it uses: masked (PostgreSQL here trusts local
    connections, so the password is carried and never checked)."""
    from sqlalchemy.engine import make_url

    from worker.app import app
    from worker.db import dispose_engines
    from worker.devtools.embedded import EmbeddedWorker
    from worker.settings import get_settings

    secret = "Pa55-w0rd-s3cret"
    monkeypatch.setenv("BILLING_DOCUMENTS_DIR", str(tmp_path / "documents"))
    monkeypatch.setenv("BILLING_EMAILS_DIR", str(tmp_path / "emails"))
    monkeypatch.setenv(
        "BILLING_DATABASE_URL", make_url(postgres).set(password=secret).render_as_string(hide_password=False)
    )
    get_settings.cache_clear()
    dispose_engines()
    EmbeddedWorker(app).purge()
    printed: list[str] = []
    run_demo(printed.append)
    assert printed[0].startswith("database: postgresql+psycopg://postgres:***@")
    assert not [line for line in printed if secret in line]
