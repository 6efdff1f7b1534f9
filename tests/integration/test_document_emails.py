"""Document emails (billing.documents.email) against a real SMTP server started here (aiosmtpd,
with AUTH): MIME structure, the PDF attached, headers, the language; sent once in practice,
never lost; no header injection; .eml files when no SMTP server is configured."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.support import call, count, customer, items
from worker.db import read_session
from worker.documents.store import DatabaseStore
from worker.services.base import Outcome
from worker.settings import get_settings
from worker.tables import EmailDelivery

pytestmark = [
    pytest.mark.usefixtures("database"),
    # AUTH without TLS, on loopback only: what the test checks is that the worker logs in
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.messages.append((envelope, email.message_from_bytes(content, policy=default)))
        return "250 OK"


def _authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"billing", b"s3cret")
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    monkeypatch.setenv("BILLING_SMTP_URL", f"smtp://billing:s3cret@127.0.0.1:{port}?starttls=false")
    monkeypatch.setenv("BILLING_EMAIL_FROM", "billing@acme.example")
    monkeypatch.setenv("BILLING_ISSUER_NAME", "Acme")
    get_settings.cache_clear()
    try:
        yield inbox
    finally:
        controller.stop()


def run_all(outcome: Outcome) -> list[Outcome]:
    """Every document and email request an outcome leads to, as the documents worker runs them."""
    done, queue = [], [f for f in outcome.follow_ups if f.task_name.startswith("billing.documents.")]
    while queue:
        follow_up = queue.pop(0)
        result = call(follow_up.task_name, **follow_up.payload)
        done.append(result)
        queue.extend(result.follow_ups)
    return done


def sent_invoice(name: str = "Chloé Martin", locales: tuple[str, ...] = ("fr",)) -> Outcome:
    cus = customer("eur", name=name, email="chloe@example.fr", preferred_locales=list(locales))
    items(cus, "eur", [4500], description="Abonnement")
    return call(
        "billing.invoices.create",
        customer=cus,
        finalize=True,
        collection_method="send_invoice",
        days_until_due=30,
    )


def test_a_sent_invoice_reaches_the_customer_in_her_language_with_its_pdf(smtp: Inbox) -> None:
    outcome = sent_invoice()
    run_all(outcome)
    ((envelope, message),) = smtp.messages
    assert envelope.rcpt_tos == ["chloe@example.fr"] and envelope.mail_from == "billing@acme.example"
    assert message["Subject"].startswith("Facture ") and message["Subject"].endswith(" de Acme")
    assert message["Content-Language"] == "fr"
    assert message["To"] == "Chloé Martin <chloe@example.fr>"
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert body is not None and "Montant dû : 45,00" in body.get_content()
    assert html is not None and "<p>Vous trouverez ci-joint votre facture" in html.get_content()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    with read_session() as session:
        stored = DatabaseStore(session).get(outcome.id or "")
    assert stored is not None and attachment.get_content() == stored.content
    (delivery,) = _deliveries()
    assert delivery.message_id == message["Message-ID"] and delivery.sent_at is not None


def _deliveries() -> list[EmailDelivery]:
    from sqlmodel import select

    with read_session() as session:
        return list(session.exec(select(EmailDelivery)))


def test_charge_automatically_invoices_are_not_emailed_but_credit_notes_are(smtp: Inbox) -> None:
    cus = customer("usd", name="Ada", email="ada@example.com", preferred_locales=["de"])
    items(cus, "usd", [3000])
    invoice = call("billing.invoices.create", customer=cus, finalize=True)
    run_all(invoice)
    assert smtp.messages == []
    note = call("billing.credit_notes.create", invoice=invoice.id, amount=1000, reason="duplicate")
    run_all(note)
    ((_, message),) = smtp.messages
    assert message["Subject"].startswith("Gutschrift ")
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename().endswith("-CN-01.pdf")


def test_a_redelivery_after_sending_sends_nothing_more(smtp: Inbox) -> None:
    outcome = sent_invoice()
    run_all(outcome)
    again = call("billing.documents.email", invoice=outcome.id, idempotency_key=f"email:{outcome.id}")
    assert again.replayed
    assert len(smtp.messages) == 1


def test_a_crash_between_sending_and_recording_sends_the_same_message_id_again(
    smtp: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never lost: the second attempt sends; the receiving side sees one Message-ID twice."""
    outcome = sent_invoice()
    render = next(f for f in outcome.follow_ups if f.task_name == "billing.documents.render")
    (email_request,) = call(render.task_name, **render.payload).follow_ups
    import worker.services.base as base

    def crash(*_: Any, **__: Any) -> None:
        raise RuntimeError("worker killed after the message left")

    with monkeypatch.context() as patched:
        patched.setattr(base, "settle", crash)
        with pytest.raises(RuntimeError):
            call(email_request.task_name, **email_request.payload)
    (delivery,) = _deliveries()
    assert delivery.sent_at is None and delivery.attempts == 1  # recorded before, not marked after
    call(email_request.task_name, **email_request.payload)
    first, second = (message for _, message in smtp.messages)
    assert first["Message-ID"] == second["Message-ID"] == delivery.message_id
    (delivery,) = _deliveries()
    assert delivery.sent_at is not None and delivery.attempts == 2


def test_a_name_with_a_newline_cannot_add_a_header(smtp: Inbox) -> None:
    outcome = sent_invoice(name="Eve\r\nBcc: victim@example.com\nX-Evil: 1")
    run_all(outcome)
    ((envelope, message),) = smtp.messages
    assert envelope.rcpt_tos == ["chloe@example.fr"]
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert "Eve Bcc: victim@example.com X-Evil: 1" in message["To"]


def test_without_an_smtp_server_emails_are_eml_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_EMAILS_DIR", str(tmp_path))
    get_settings.cache_clear()
    outcome = sent_invoice(locales=("ja",))
    run_all(outcome)
    (eml,) = tmp_path.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=default)
    assert "請求書" in message["Subject"]
    assert count(EmailDelivery, EmailDelivery.sent_at.is_not(None)) == 1  # type: ignore[union-attr]
