"""Invoice and credit note documents: localized HTML and PDF (README: Documents).

``model`` reads what a document shows and writes its values for the locale, ``render``
lays them out (Jinja2 template per kind, then WeasyPrint), ``store`` keeps the PDF once
made, ``i18n`` and ``formatting`` hold the locale's labels and formats. The task that makes
a document is ``worker/services/documents.py`` (queue ``billing.documents``).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.documents.model import Source, view
from worker.documents.render import render_html, render_pdf
from worker.settings import Issuer, get_settings

__all__ = ["Rendition", "html_of", "render"]


@dataclass(frozen=True, slots=True)
class Rendition:
    object_id: str
    kind: str
    locale: str
    html: str
    pdf: bytes
    created: int


def html_of(source: Source, issuer: Issuer | None = None) -> tuple[str, str]:
    """The document's HTML and its locale."""
    values = view(source, issuer or get_settings().issuer)
    return render_html(values), values["locale"]


def render(source: Source, issuer: Issuer | None = None) -> Rendition:
    html, locale = html_of(source, issuer)
    return Rendition(source.object_id, source.kind, locale, html, render_pdf(html), source.created)
