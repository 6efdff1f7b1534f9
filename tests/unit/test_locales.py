"""Language tags (RFC 5646 well-formedness) and locale negotiation (domain/locales.py)."""

from __future__ import annotations

import pytest

from domain.errors import BadRequest
from domain.locales import check_language_tag, fallback_chain, negotiate, well_formed

SUPPORTED = ("en", "fr", "fr-CA", "de", "id", "ja")


@pytest.mark.parametrize(
    "tag",
    ["en", "EN", "fr-CA", "zh-Hant-TW", "es-419", "sr-Latn-RS", "zh-yue-HK", "de-CH-1901",
     "en-a-bbb-x-a-ccc", "x-private", "i-klingon", "en-GB-oed", "qaa-Qaaa", "sl-rozaj-biske"],
)  # fmt: skip
def test_well_formed_tags_pass(tag: str) -> None:
    assert well_formed(tag)
    assert check_language_tag(tag, "preferred_locales[0]") == tag


@pytest.mark.parametrize(
    "tag",
    ["", "en_US", "englishes", "en-", "-en", "de-DE-DE", "e", "en--US", "fr-CA-", "de-1901-1901",
     "en-a-bbb-a-ccc", "ja-JP-x-", "é", "en US", "a" * 36],
)  # fmt: skip
def test_tags_not_well_formed_are_refused_with_the_field(tag: str) -> None:
    assert not well_formed(tag)
    with pytest.raises(BadRequest) as refused:
        check_language_tag(tag, "preferred_locales[2]")
    assert refused.value.field == "preferred_locales[2]"


def test_fallback_chain_drops_subtags_from_the_right_and_extensions_first() -> None:
    assert fallback_chain("fr-Latn-CA") == ["fr-latn-ca", "fr-latn", "fr"]
    assert fallback_chain("de-DE-u-co-phonebk") == ["de-de", "de"]


@pytest.mark.parametrize(
    ("preferred", "chosen"),
    [
        (["fr-CA", "en"], "fr-CA"),
        (["fr-CH", "de"], "fr"),
        (["FR-ca"], "fr-CA"),
        (["pt-BR", "ja-JP"], "ja"),
        (["es", "it"], "en"),
        ([], "en"),
        (["not a tag", "de-AT"], "de"),
    ],
)
def test_negotiate_takes_the_first_supported_along_each_chain(preferred: list[str], chosen: str) -> None:
    assert negotiate(preferred, SUPPORTED, "en") == chosen
