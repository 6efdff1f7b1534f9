"""HTML from the kind's template (Jinja2, autoescaped), PDF from the HTML (WeasyPrint).

The same inputs give the same bytes: the PDF's dates are the document's own
(``dcterms.created``/``modified`` from the object's finalization, not the clock), and the
fonts WeasyPrint embeds are subset with a fixed timestamp (``SOURCE_DATE_EPOCH``, which
fontTools reads; set for the process if unset). A redelivered render therefore makes the
bytes already stored.
"""

from __future__ import annotations

import os
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from worker.documents.i18n import translations

FIXED_FONT_EPOCH = "315532800"
"""1980-01-01T00:00:00Z: the timestamp written into embedded font subsets."""


def _css_string(value: str) -> Markup:
    """A label inside a CSS string in double quotes, in a ``<style>`` element (where HTML
    entities mean nothing): quotes and backslashes escaped, ``<`` never written."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("<", "\\3c ")
    return Markup(escaped)


@cache
def environment(locale: str) -> Environment:
    """One environment per locale, its catalogue installed (environments are not shared
    across locales, so rendering in two threads at once cannot mix them)."""
    env = Environment(
        loader=PackageLoader("worker.documents", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["css_string"] = _css_string
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    return env


@cache
def stylesheet() -> str:
    return files("worker.documents").joinpath("templates/document.css").read_text(encoding="utf-8")


def render_html(values: dict[str, Any]) -> str:
    """The document as one standalone HTML page (styles inline, logo as a data URI)."""
    template = environment(values["locale"]).get_template(f"{values['kind']}.html")
    return template.render(**values, stylesheet=stylesheet())


def render_pdf(html: str) -> bytes:
    """The PDF of a document's HTML; deterministic (see the module's docstring)."""
    os.environ.setdefault("SOURCE_DATE_EPOCH", FIXED_FONT_EPOCH)
    from weasyprint import HTML  # heavy: loaded by the processes that render, only

    pdf: bytes = HTML(string=html).write_pdf()
    return pdf
