"""The fake broker's address, and reading what it holds as a consumer in another language would."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any


def broker_url() -> str:
    """A new broker URL on a host that cannot resolve: only the fake connection (conftest.py)
    reaches it. New for each test because kombu keeps one producer pool per broker URL for
    the whole process (``kombu.pools``), which would hand a later test an earlier test's
    connection, and with it the earlier test's fake server."""
    return f"redis://billing-fake-{uuid.uuid4().hex}.invalid:6379/0"


def decode(raw: bytes) -> tuple[dict[str, Any], Any]:
    """A raw queue entry as any consumer reads it: the kombu envelope (JSON) and its body,
    base64-decoded and parsed as the envelope's content type says."""
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json"
    assert envelope["content-encoding"] == "utf-8"
    assert envelope["properties"]["body_encoding"] == "base64"
    return envelope, json.loads(base64.b64decode(envelope["body"]).decode("utf-8"))
