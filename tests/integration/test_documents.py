"""Invoice and credit note documents (worker/documents, billing.documents.render) on SQLite and
PostgreSQL: each locale renders its labels and amounts (text read back from the PDF with
pypdf), a 250-line invoice paginates, a redelivery changes no byte, customer text is escaped."""

from __future__ import annotations

import io
import re
import unicodedata
from typing import Any

import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from tests.support import call, count, customer, get, invoice, items
from worker.cli import main
from worker.db import read_session
from worker.documents import render
from worker.documents.model import load
from worker.documents.store import DatabaseStore
from worker.services.base import Outcome
from worker.settings import get_settings
from worker.tables import Document, OutboxMessage

pytestmark = pytest.mark.usefixtures("database")

RENDER = "billing.documents.render"


def deliver_documents(outcome: Outcome) -> list[Outcome]:
    """Run the document requests an outcome asks for, as a documents worker would."""
    return [call(f.task_name, **f.payload) for f in outcome.follow_ups if f.task_name == RENDER]


def pdf_text(content: bytes) -> str:
    """The PDF's text, spaces of every width made plain (CLDR groups with narrow no-break spaces)."""
    text = "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(content)).pages)
    return "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)


def stored(object_id: str) -> bytes:
    with read_session() as session:
        document = DatabaseStore(session).get(object_id)
    assert document is not None, f"no document for {object_id}"
    return document.content


def finalized_invoice(locales: list[str], currency: str, amounts: list[int], **fields: Any) -> str:
    cus = customer(currency, name="Ada", preferred_locales=locales, **fields)
    items(cus, currency, amounts, description="Pro plan")
    outcome = invoice(cus, finalize=True)
    assert outcome.id is not None
    (done,) = deliver_documents(outcome)
    assert done.id == outcome.id
    return outcome.id


@pytest.mark.parametrize(
    ("locales", "currency", "labels", "amounts"),
    [
        (["en-US"], "cad", ["Invoice", "Amount due", "Subtotal"], ["CA$1,234.56"]),
        (["fr-FR"], "eur", ["Facture", "Montant dû", "Sous-total"], ["1 234,56 €"]),
        (["fr-CA"], "cad", ["Facture", "Montant dû", "Total avant taxes"], ["1 234,56 $"]),
        (["de-AT", "en"], "eur", ["Rechnung", "Fälliger Betrag", "Zwischensumme"], ["1.234,56 €"]),
        (["id"], "idr", ["Faktur", "Jumlah terutang"], ["Rp 1.234,56", "Rp1.234,56"]),
        (["ja-JP"], "jpy", ["請求書", "お支払い金額", "小計"], ["￥123,456"]),
        (["pt-BR"], "usd", ["Invoice", "Amount due"], ["$1,234.56"]),
    ],
)
def test_each_locale_renders_its_labels_and_amounts(
    locales: list[str], currency: str, labels: list[str], amounts: list[str]
) -> None:
    tax_rate = None
    if "fr-CA" in locales:  # a taxed invoice shows "Total excluding tax"
        tax_rate = call("billing.tax_rates.create", display_name="TPS", percentage="5", inclusive=False).id
    cus = customer(currency, name="Ada", preferred_locales=locales)
    items(cus, currency, [123456], description="Pro plan", **({"tax_rates": [tax_rate]} if tax_rate else {}))
    outcome = invoice(cus, finalize=True)
    deliver_documents(outcome)
    assert outcome.id is not None
    text = pdf_text(stored(outcome.id))
    for label in labels:
        assert label in text, (label, text)
    assert any(amount.replace("\u00a0", " ") in text for amount in amounts), (amounts, text)
    number = get(outcome.id)["number"]
    assert number in text


def test_a_250_line_invoice_paginates_with_its_header_on_every_page() -> None:
    cus = customer("eur", name="Bea", preferred_locales=["fr"])
    items(cus, "eur", [100 + i for i in range(250)], description="Ligne")
    outcome = invoice(cus, finalize=True)
    deliver_documents(outcome)
    assert outcome.id is not None
    reader = PdfReader(io.BytesIO(stored(outcome.id)))
    assert len(reader.pages) >= 5
    for page in reader.pages:
        assert "Description" in (page.extract_text() or "")  # the table's header, repeated
    assert f"Page {len(reader.pages)} / {len(reader.pages)}" in pdf_text(stored(outcome.id))


def test_a_redelivered_render_changes_nothing_and_rendering_again_gives_the_same_bytes() -> None:
    in_id = finalized_invoice(["de"], "eur", [5000, 2500])
    first = stored(in_id)
    again = call(RENDER, invoice=in_id, idempotency_key=f"document:{in_id}")
    assert again.replayed
    # the key forgotten (purged after its retention): the stored document is kept as it is
    with read_session() as session:
        source = load(session, in_id)
    assert render(source).pdf == first
    assert count(Document) == 1
    assert get(in_id)["invoice_pdf"] == f"billing pdf {in_id}"


def test_the_document_request_is_in_the_outbox_of_the_finalizing_transaction() -> None:
    cus = customer("usd", name="Ada")
    items(cus, "usd", [1000])
    outcome = invoice(cus, finalize=True)
    (follow_up,) = [f for f in outcome.follow_ups if f.task_name == RENDER]
    assert follow_up.payload == {"invoice": outcome.id, "idempotency_key": f"document:{outcome.id}"}
    assert count(OutboxMessage, OutboxMessage.key == follow_up.key) == 1
    assert get(outcome.id or "")["invoice_pdf"] is None  # not rendered yet
    draft = invoice(customer("usd"), pending_invoice_items_behavior="exclude")
    assert [f for f in draft.follow_ups if f.task_name == RENDER] == []  # drafts get none


def test_with_documents_off_nothing_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_DOCUMENTS", "false")
    get_settings.cache_clear()
    cus = customer("usd", name="Ada")
    items(cus, "usd", [1000])
    outcome = invoice(cus, finalize=True)
    note = call("billing.credit_notes.create", invoice=outcome.id, amount=200)
    assert [f for f in outcome.follow_ups + note.follow_ups if f.task_name == RENDER] == []
    assert count(OutboxMessage, OutboxMessage.task_name == RENDER) == 0
    assert (get(outcome.id or "")["invoice_pdf"], get(note.id or "")["pdf"]) == (None, None)
    get_settings.cache_clear()


def test_customer_text_is_escaped_and_the_billing_address_wins_over_shipping() -> None:
    cus = customer(
        "usd",
        name="<b>Ada</b> & Co",
        preferred_locales=["en"],
        address={"line1": "1 Billing Street", "city": "Springfield", "country": "US"},
        shipping={"name": "Depot", "address": {"line1": "9 Shipping Road", "country": "US"}},
        tax_id_data=[{"type": "us_ein", "value": "12-3456789"}],
    )
    items(cus, "usd", [1000], description='<script>alert("x")</script>')
    outcome = invoice(cus, finalize=True)
    assert outcome.id is not None
    result = CliRunner().invoke(main, ["html", outcome.id])
    assert result.exit_code == 0, result.output
    assert "<script>alert" not in result.output
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in result.output
    assert "&lt;b&gt;Ada&lt;/b&gt; &amp; Co" in result.output
    assert "1 Billing Street" in result.output and "9 Shipping Road" not in result.output
    assert "EIN 12-3456789" in result.output


def test_tax_notes_discounts_and_credit_applied_are_shown() -> None:
    rate = call("billing.tax_rates.create", display_name="VAT", percentage="20", inclusive=False).id
    coupon = call("billing.coupons.create", id="TENOFF", name="Ten off", percent_off="10").id
    cus = customer("eur", name="Ada", preferred_locales=["en"], tax_exempt="reverse")
    call("billing.balance_transactions.create", customer=cus, amount=-500)
    items(cus, "eur", [10000], description="Service", tax_rates=[rate])
    outcome = invoice(cus, finalize=True, discounts=[{"coupon": coupon}])
    deliver_documents(outcome)
    text = pdf_text(stored(outcome.id or ""))
    assert "Reverse charge" in text
    assert "Ten off (10%)" in text and "-€10.00" in text.replace("\u2212", "-")
    assert "Applied balance" in text and "-€5.00" in text.replace("\u2212", "-")


def test_a_credit_note_shows_its_invoice_reason_and_where_the_credit_went() -> None:
    in_id = finalized_invoice(["fr"], "eur", [4000])
    note = call("billing.credit_notes.create", invoice=in_id, amount=1500, reason="duplicate", memo="Erreur")
    (done,) = deliver_documents(note)
    assert done.id == note.id
    text = pdf_text(stored(note.id or ""))
    number = get(in_id)["number"]
    assert "Avoir" in text and number in text and "Doublon" in text and "Erreur" in text
    assert "Réduction du montant dû de la facture" in text and "15,00 €" in text
    assert get(note.id or "")["pdf"] == f"billing pdf {note.id}"


def test_billing_pdf_writes_the_stored_bytes_and_refuses_what_is_not_rendered(tmp_path: Any) -> None:
    in_id = finalized_invoice(["ja"], "jpy", [5000])
    target = tmp_path / "in.pdf"
    result = CliRunner().invoke(main, ["pdf", in_id, "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == stored(in_id)
    cus = customer("usd")
    items(cus, "usd", [100])
    pending = invoice(cus, finalize=True).id or ""
    result = CliRunner().invoke(main, ["pdf", pending, "-o", str(tmp_path / "x.pdf")])
    assert result.exit_code != 0
    assert not (tmp_path / "x.pdf").exists()


def test_the_issuer_block_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_ISSUER_NAME", "Acme Cloud SAS")
    monkeypatch.setenv("BILLING_ISSUER_ADDRESS_CITY", "Paris")
    monkeypatch.setenv("BILLING_ISSUER_TAX_IDS", '[{"type": "eu_vat", "value": "FR40303265045"}]')
    monkeypatch.setenv("BILLING_ISSUER_FOOTER", "Merci !")
    get_settings.cache_clear()
    in_id = finalized_invoice(["fr"], "eur", [1000])
    text = pdf_text(stored(in_id))
    assert "Acme Cloud SAS" in text and "VAT FR40303265045" in text and "Merci !" in text
    assert re.search(r"Paris", text)
