"""The label catalogues: extract, update, compile (Babel). Run after changing a label:

    python -m worker.documents.catalogs

It extracts every label from the templates, ``model.py`` and ``email.py`` into ``locales/messages.pot``,
merges it into each locale's ``messages.po`` (new labels untranslated, gone ones dropped) and
compiles each ``.po`` to the ``.mo`` the worker loads. Both are committed: an installed
package needs no build step, and ``tests/unit/test_document_catalogues.py`` fails when a
``.mo`` is not the compilation of its ``.po`` or a label has no translation.
"""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from worker.documents.i18n import DOMAIN, LOCALES_DIR, SUPPORTED_LOCALES, catalogue_names

PACKAGE = Path(__file__).parent
SOURCES = (
    ("jinja2", sorted((PACKAGE / "templates").glob("*.html"))),
    ("python", [PACKAGE / "model.py", PACKAGE / "email.py"]),
)
KEYWORDS = {"_": None, "gettext": None, "N_": None}


def extract() -> Catalog:
    """Every label of the templates and the model, as a template catalogue."""
    template = Catalog(project="billing-worker", domain=DOMAIN, fuzzy=False)
    for method, paths in SOURCES:
        for path in paths:
            options = {"extensions": "jinja2.ext.i18n", "trimmed": "true"} if method == "jinja2" else {}
            for lineno, message, comments, context in extract_from_file(
                method, str(path), keywords=KEYWORDS, options=options
            ):
                location = (path.relative_to(PACKAGE).as_posix(), lineno)
                template.add(message, locations=[location], auto_comments=comments, context=context)
    return template


def po_path(locale: str) -> Path:
    return LOCALES_DIR / catalogue_names(locale)[0] / "LC_MESSAGES" / f"{DOMAIN}.po"


def compiled(po: Path) -> bytes:
    with po.open("rb") as source:
        catalog = read_po(source)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def _po_bytes(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=100, omit_header=False, sort_output=True, include_lineno=False)
    return buffer.getvalue()


def update() -> list[Path]:
    """Extract, merge into every locale's ``.po``, compile each ``.mo``; the files written."""
    template = extract()
    LOCALES_DIR.mkdir(exist_ok=True)
    written = [LOCALES_DIR / f"{DOMAIN}.pot"]
    written[0].write_bytes(_po_bytes(template))
    for locale in SUPPORTED_LOCALES:
        if locale == "en":
            continue  # the message ids are English
        po = po_path(locale)
        po.parent.mkdir(parents=True, exist_ok=True)
        if po.exists():
            with po.open("rb") as source:
                catalog = read_po(source)
        else:
            catalog = Catalog(locale=catalogue_names(locale)[0], domain=DOMAIN, project="billing-worker")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        po.write_bytes(_po_bytes(catalog))
        po.with_suffix(".mo").write_bytes(compiled(po))
        written += [po, po.with_suffix(".mo")]
    return written


if __name__ == "__main__":
    for path in update():
        print(path.relative_to(PACKAGE))
