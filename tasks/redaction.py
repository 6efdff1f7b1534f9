"""What a task message shows of itself to monitors and logs: its arguments without personal data.

Celery puts ``argsrepr``/``kwargsrepr`` in every message's headers; Flower, task events and
Celery's own log lines show those, never the body. Made here, at publish time, the customer's
email, name, phone, addresses and tax ids never leave the producer in them: the body the worker
runs is unchanged. ``BILLING_REDACT_TASK_ARGS=false`` shows the full arguments (a development
machine, an operator allowed to see them). README: Operations.
"""

from __future__ import annotations

import os
from typing import Any

from celery.utils.saferepr import saferepr

KWARGSREPR_MAXSIZE = 1024
"""As Celery's own ``kwargsrepr`` (``app.amqp.kwargsrepr_maxsize``)."""

PERSONAL_FIELDS = frozenset({"email", "name", "phone", "address", "shipping", "tax_id_data"})
"""Keys whose values are personal data wherever they appear in a payload (a product's name too:
cheap to hide, and it keeps the rule one line)."""

REDACTED = "[redacted]"
LIST_ITEMS_SHOWN = 400


def redaction_on() -> bool:
    return os.environ.get("BILLING_REDACT_TASK_ARGS", "true").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def redacted(value: Any) -> Any:
    """``value`` with the value of every personal key replaced by ``REDACTED``, at any depth (lists cut
    at ``LIST_ITEMS_SHOWN`` elements: it is made to be shown, not run)."""
    if isinstance(value, dict):
        return {
            key: REDACTED if key in PERSONAL_FIELDS and item is not None else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        # what a 1,024-character repr can show, at most: a batch of 1,000 items costs no more than 400
        shown = [redacted(item) for item in value[:LIST_ITEMS_SHOWN]]
        return [*shown, "..."] if len(value) > LIST_ITEMS_SHOWN else shown
    return value


def kwargsrepr(kwargs: dict[str, Any]) -> str | None:
    """The ``kwargsrepr`` header for a message with these keyword arguments; ``None`` (Celery's
    own repr) when redaction is off."""
    return saferepr(redacted(kwargs), KWARGSREPR_MAXSIZE) if redaction_on() else None
