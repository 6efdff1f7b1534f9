"""The label catalogues (worker/documents/locales) are complete and compiled."""

from __future__ import annotations

import pytest
from babel.messages.pofile import read_po

from worker.documents.catalogs import compiled, extract, po_path
from worker.documents.i18n import SUPPORTED_LOCALES, translations

TRANSLATED = [locale for locale in SUPPORTED_LOCALES if locale not in ("en", "fr-CA")]


@pytest.mark.parametrize("locale", [locale for locale in SUPPORTED_LOCALES if locale != "en"])
def test_each_mo_is_the_compilation_of_its_po(locale: str) -> None:
    po = po_path(locale)
    assert po.with_suffix(".mo").read_bytes() == compiled(po), "run: python -m worker.documents.catalogs"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_label_of_the_templates_is_translated(locale: str) -> None:
    with po_path(locale).open("rb") as source:
        catalog = read_po(source)
    labels = {message.id for message in extract() if message.id}
    translated = {message.id for message in catalog if message.id and message.string}
    assert labels - translated == set()


def test_fr_ca_falls_back_to_fr_label_by_label() -> None:
    assert translations("fr-CA").gettext("Tax") == "Taxes"  # its own
    assert translations("fr-CA").gettext("Amount due") == "Montant dû"  # from fr
    assert translations("en").gettext("Amount due") == "Amount due"
