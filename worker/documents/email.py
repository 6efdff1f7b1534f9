"""The email that carries a document to its customer: localized subject, text and HTML bodies,
the PDF attached, a stable ``Message-ID``; sent over SMTP or written as an ``.eml`` file.

Customer-controlled text never reaches a header as it is: names lose every control character
(a newline cannot start a header of its own), and every header is written by Python's email
package under ``policy.SMTP``, which encodes non-ASCII text and refuses a raw line break.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from markupsafe import escape

from worker.documents.formatting import Formatter
from worker.documents.i18n import translations

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")


def header_text(value: str) -> str:
    """Customer text made safe for a header: control characters (CR, LF, NUL, …) become one space."""
    return _CONTROL.sub(" ", value).strip()


def message_id(object_id: str, recipient: str, domain: str) -> str:
    """The same for every attempt to send one document to one recipient: a receiving system
    that sees it twice (a crash between sending and recording) can tell it is one message."""
    digest = hashlib.sha256(f"{object_id}\x00{recipient.lower()}".encode()).hexdigest()[:16]
    return f"<{object_id}.{digest}@{domain}>"


@dataclass(frozen=True, slots=True)
class Letter:
    """What the email says, before it is a MIME message."""

    kind: str
    locale: str
    number: str
    issuer: str
    amount: str
    due: str
    """A date, or empty (credit notes, invoices without a due date)."""


def subject_and_bodies(letter: Letter) -> tuple[str, str, str]:
    """The localized subject, text body and HTML body."""
    _ = translations(letter.locale).gettext
    values = {"number": letter.number, "issuer": letter.issuer, "amount": letter.amount, "date": letter.due}
    if letter.kind == "invoice":
        subject = _("Invoice %(number)s from %(issuer)s") % values
        lines = [_("Your invoice %(number)s is attached.") % values]
        if letter.due:
            lines.append(_("Amount due: %(amount)s, by %(date)s.") % values)
        else:
            lines.append(_("Amount due: %(amount)s.") % values)
    else:
        subject = _("Credit note %(number)s from %(issuer)s") % values
        lines = [_("Your credit note %(number)s for %(amount)s is attached.") % values]
    lines.append(_("Thank you."))
    text = "\n\n".join(lines) + "\n"
    html = "".join(f"<p>{escape(line)}</p>" for line in lines)
    return (
        header_text(subject),
        text,
        f'<!DOCTYPE html><html lang="{letter.locale}"><body>{html}</body></html>',
    )


def build_message(
    letter: Letter,
    *,
    sender: str,
    recipient: str,
    recipient_name: str | None,
    pdf: bytes,
    filename: str,
    message_id_value: str,
    date: int,
) -> EmailMessage:
    subject, text, html = subject_and_bodies(letter)
    message = EmailMessage(policy=SMTP)
    message["Subject"] = subject
    message["From"] = sender
    local, _, domain = recipient.partition("@")
    message["To"] = Address(display_name=header_text(recipient_name or ""), username=local, domain=domain)
    message["Date"] = format_datetime(datetime.fromtimestamp(date, UTC))
    message["Message-ID"] = message_id_value
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=header_text(filename))
    message["Content-Language"] = letter.locale  # after the parts: setting content clears Content-*
    return message


@dataclass(frozen=True, slots=True)
class Sender:
    """Where messages go: an SMTP server (``BILLING_SMTP_URL``) or a folder of ``.eml`` files."""

    smtp_url: str
    folder: str

    def send(self, message: EmailMessage) -> str:
        """Send (or write) the message; returns where it went."""
        if not self.smtp_url:
            folder = Path(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9._-]", "_", str(message["Message-ID"]).strip("<>")) + ".eml"
            (folder / name).write_bytes(message.as_bytes())  # the same name on a second attempt
            return str(folder / name)
        url = urlsplit(self.smtp_url)
        options = parse_qs(url.query)
        host, port = url.hostname or "localhost", url.port
        timeout = 30
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port or 465, timeout=timeout, context=ssl.create_default_context()
            )
        elif url.scheme == "smtp":
            client = smtplib.SMTP(host, port or 587, timeout=timeout)
        else:
            raise ValueError(f"BILLING_SMTP_URL: scheme must be smtp or smtps (got {url.scheme!r})")
        with client:
            if url.scheme == "smtp" and options.get("starttls", ["true"])[0].lower() not in (
                "false",
                "0",
                "no",
            ):
                client.starttls(context=ssl.create_default_context())
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
        return f"{url.scheme}://{host}:{port}"


def smtp_domain(sender: str) -> str:
    """The domain part of the sender address (the Message-ID's right-hand side)."""
    return sender.rpartition("@")[2].strip("> ") or "billing-worker.invalid"


def letter_for(
    kind: str, locale: str, number: str, issuer: str, amount: int, currency: str, due: int | None
) -> Letter:
    fmt = Formatter(locale)
    return Letter(kind, locale, number, issuer, fmt.money(amount, currency), fmt.date(due) if due else "")
