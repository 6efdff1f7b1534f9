"""Language tags (a customer's ``preferred_locales``) and which supported locale a document
uses (domain/README.md §1.1).

``check_language_tag`` accepts a tag only when it is well formed by RFC 5646 (BCP 47, which
replaced RFC 4646 with the same grammar plus extended language subtags): language (2-3
letters with up to three extensions, 4 or 5-8 letters), then optional script (4 letters),
region (2 letters or 3 digits), variants, extensions (a singleton then 2-8 characters) and
private use; or a private-use tag (``x-…``) or one of the grandfathered tags. Well formed is
not the same as registered: ``qaa-Qaaa`` and ``english`` (5-8 letters: reserved) pass;
``en_US``, ``en-`` and ``de-DE-DE`` (a second region) do not. Duplicate variants or singletons
are refused as the RFC asks (§2.2.5, §2.2.6).

``negotiate`` picks the first supported locale of a preference list, walking each tag's
fallback chain (``fr-CA`` -> ``fr``), else the default: pure, so every locale decision
lives here and ``worker/documents`` only formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from domain.errors import BadRequest

_ALPHANUM = "[A-Za-z0-9]"
_LANGUAGE = r"(?:[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}|[A-Za-z]{4}|[A-Za-z]{5,8})"
_SCRIPT = r"[A-Za-z]{4}"
_REGION = r"(?:[A-Za-z]{2}|[0-9]{3})"
_VARIANT = rf"(?:{_ALPHANUM}{{5,8}}|[0-9]{_ALPHANUM}{{3}})"
_EXTENSION = rf"(?:[0-9A-WYZa-wyz](?:-{_ALPHANUM}{{2,8}})+)"
_PRIVATE = rf"(?:[xX](?:-{_ALPHANUM}{{1,8}})+)"
_LANGTAG = re.compile(
    rf"(?P<language>{_LANGUAGE})(?:-(?P<script>{_SCRIPT}))?(?:-(?P<region>{_REGION}))?"
    rf"(?P<variants>(?:-{_VARIANT})*)(?P<extensions>(?:-{_EXTENSION})*)(?:-{_PRIVATE})?"
)
_PRIVATE_TAG = re.compile(_PRIVATE)
GRANDFATHERED = frozenset(
    tag.lower()
    for tag in (
        "en-GB-oed", "i-ami", "i-bnn", "i-default", "i-enochian", "i-hak", "i-klingon", "i-lux",
        "i-mingo", "i-navajo", "i-pwn", "i-tao", "i-tay", "i-tsu", "sgn-BE-FR", "sgn-BE-NL",
        "sgn-CH-DE", "art-lojban", "cel-gaulish", "no-bok", "no-nyn", "zh-guoyu", "zh-hakka",
        "zh-min", "zh-min-nan", "zh-xiang",
    )
)  # fmt: skip
MAX_TAG_LENGTH = 35
"""RFC 5646 §4.4.1: implementations must support tags of at least 35 characters; longer
tags have no use on a document and are refused."""


def well_formed(tag: str) -> bool:
    """Whether ``tag`` is a well-formed language tag (see the module's docstring)."""
    if not tag.isascii() or not 1 <= len(tag) <= MAX_TAG_LENGTH:
        return False
    if tag.lower() in GRANDFATHERED or _PRIVATE_TAG.fullmatch(tag):
        return True
    match = _LANGTAG.fullmatch(tag)
    if match is None:
        return False
    variants = [v.lower() for v in match["variants"].split("-") if v]
    if len(set(variants)) != len(variants):
        return False
    singletons = [part.lower() for part in match["extensions"].split("-") if len(part) == 1]
    return len(set(singletons)) == len(singletons)


def check_language_tag(tag: object, field: str) -> str:
    """``tag`` if it is a well-formed language tag, else ``BadRequest`` naming ``field``."""
    if not isinstance(tag, str) or not well_formed(tag):
        raise BadRequest(
            f"{tag!r} is not a well-formed BCP 47 language tag (such as 'en', 'fr-CA', 'zh-Hant-TW')",
            field=field,
        )
    return tag


def fallback_chain(tag: str) -> list[str]:
    """The tag, then each shorter prefix by subtag, lowercased: ``fr-Latn-CA`` -> ``fr-latn-ca``,
    ``fr-latn``, ``fr`` (RFC 4647 lookup). Private-use and extension parts are dropped first."""
    subtags = tag.lower().split("-")
    for index, subtag in enumerate(subtags):
        if len(subtag) == 1 and index > 0:  # a singleton starts extensions or private use
            subtags = subtags[:index]
            break
    return ["-".join(subtags[:end]) for end in range(len(subtags), 0, -1)]


def negotiate(preferred: Iterable[str], supported: Sequence[str], default: str) -> str:
    """The first supported locale along the preferences' fallback chains, else ``default``.

    ``supported`` holds tags such as ``fr-CA``; matching ignores case, the answer is spelt as
    in ``supported``. Each preference is tried in full before the next is looked at, so
    ``["fr-CH", "de"]`` gives ``fr`` (fr-CH -> fr) before it would give ``de``.
    """
    by_lower = {tag.lower(): tag for tag in supported}
    for tag in preferred:
        if not well_formed(tag):
            continue  # stored before validation was strict: skipped, never an error on a document
        for candidate in fallback_chain(tag):
            if candidate in by_lower:
                return by_lower[candidate]
    return default
