"""Which locale a document is written in, and its labels (gettext catalogues).

The catalogues live in ``locales/<ll[_CC]>/LC_MESSAGES/messages.po``, extracted from the
templates and compiled to ``.mo`` by Babel (``python -m worker.documents.catalogs``; the
``.mo`` files are committed next to their ``.po``, and a test checks they are the
compilation of it). English is the source language: its labels are the message ids.
"""

from __future__ import annotations

import gettext
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from domain.locales import negotiate

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
SUPPORTED_LOCALES = ("en", "fr", "fr-CA", "de", "id", "ja")
"""Each has a catalogue (``en`` is the message ids themselves); ``fr-CA`` falls back to ``fr``
for what it does not say otherwise, and every locale to English."""


def document_locale(preferred_locales: Iterable[str] | None) -> str:
    """The first supported of the customer's preferred locales (along each one's fallback
    chain: ``fr-CH`` -> ``fr``), else English."""
    return negotiate(preferred_locales or (), SUPPORTED_LOCALES, DEFAULT_LOCALE)


def catalogue_names(locale: str) -> list[str]:
    """gettext's names for a locale and its fallbacks: ``fr-CA`` -> ``fr_CA``, ``fr``."""
    parts = locale.split("-")
    return ["_".join(parts[:end]) for end in range(len(parts), 0, -1)]


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The locale's catalogue chained to its fallbacks; English (no catalogue) as is."""
    if locale == DEFAULT_LOCALE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALES_DIR, languages=catalogue_names(locale))
