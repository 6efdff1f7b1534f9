"""Webhook signatures, for the services that receive this worker's events (README: Webhooks).

Every delivery is an HTTP POST of the event's JSON with a ``Stripe-Signature`` header, made
exactly as Stripe makes it, so that verification code written for Stripe works unchanged:

    Stripe-Signature: t=1700000000,v1=<hex HMAC-SHA256(secret, "1700000000.<raw body>")>

The key is the endpoint's whole signing secret (``whsec_…``) as UTF-8, as Stripe's libraries
use it. During a secret rotation a header may carry several ``v1`` entries: any one that
matches is enough.

    from tasks.webhooks import SignatureVerificationError, verify_signature

    try:
        event = verify_signature(request.body, request.headers["Stripe-Signature"], secret)
    except SignatureVerificationError:
        return 400

Standard library only: a receiving service needs nothing else from this package.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

__all__ = [
    "SIGNATURE_HEADER",
    "SignatureVerificationError",
    "new_signing_secret",
    "sign",
    "signature_header",
    "verify_signature",
]

SIGNATURE_HEADER = "Stripe-Signature"
"""The header the signature travels in: Stripe's own name, so receivers written for Stripe
(and its libraries' ``construct_event``) read it where they already look."""
SCHEME = "v1"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class SignatureVerificationError(ValueError):
    """The payload is not signed with this secret, or the signature is too old (a replay).

    ``reason``: ``malformed_header``, ``no_signature``, ``timestamp_outside_tolerance`` or
    ``signature_mismatch``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_signing_secret() -> str:
    """A new endpoint signing secret: ``whsec_`` and 256 random bits."""
    return SECRET_PREFIX + secrets.token_hex(32)


def _bytes(payload: bytes | str) -> bytes:
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


def sign(payload: bytes | str, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<payload>"`` keyed with ``secret``."""
    signed = str(int(timestamp)).encode() + b"." + _bytes(payload)
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def signature_header(payload: bytes | str, secret: str, timestamp: int) -> str:
    return f"t={int(timestamp)},{SCHEME}={sign(payload, secret, timestamp)}"


def verify_signature(
    payload: bytes | str,
    header: str | None,
    secret: str,
    tolerance_s: int | None = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check ``header`` against the raw request body and return the event, parsed.

    Refuses (``SignatureVerificationError``) a header that is missing or malformed, one with
    no ``v1`` signature, a timestamp more than ``tolerance_s`` seconds from now (either way;
    ``None`` skips that check) and a signature that does not match. Compares in constant time.
    Pass the body exactly as received: re-serialized JSON does not match.
    """
    if not header:
        raise SignatureVerificationError("malformed_header", f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureVerificationError(
                    "malformed_header", "the timestamp t= is not an integer"
                ) from None
        elif name == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureVerificationError("malformed_header", "the header has no timestamp (t=)")
    if not signatures:
        raise SignatureVerificationError("no_signature", f"the header has no {SCHEME} signature")
    expected = sign(payload, secret, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureVerificationError("signature_mismatch", "no signature matches the payload")
    current = time.time() if now is None else now
    if tolerance_s is not None and abs(current - timestamp) > tolerance_s:
        raise SignatureVerificationError(
            "timestamp_outside_tolerance",
            f"signed at {timestamp}, {abs(current - timestamp):.0f} s from now (tolerance {tolerance_s} s)",
        )
    event: dict[str, Any] = json.loads(_bytes(payload))
    return event
