"""What a queue entry must be before Celery's code touches it: a kombu envelope holding a
Celery (protocol 2) task message with a JSON body.

Celery and kombu trust their producers: an entry without ``properties`` or with
``timelimit: 7`` raises inside the worker's main process ("Unrecoverable error"), and a
body that is not ``[args, kwargs, embed]`` fails where nothing records it. The project's
transport (``tasks.broker``) checks every entry it takes from a task queue with
``entry_problem``; an entry with a problem is never delivered: it moves to the refused
list, where the worker records it (README: Reliability). The checks are what kombu's and
Celery's consumers read, no more, so any producer that speaks Celery's protocol passes.

Cheap by design: the envelope is a few dictionary lookups, and the body is decoded by
kombu's own ``Message.decode``, whose result is cached for Celery to reuse (the default
strategy decodes it in the main process anyway).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

JSON = "application/json"
MAX_ID_LENGTH = 64
"""Task ids and delivery tags: the ``task_failures.task_id`` column, and uuid4s are 36."""
MAX_NAME_LENGTH = 128

# Celery copies every header into the task's request context; these names would overwrite
# the worker's own fields there (``is_eager``, ``called_directly``...) or are set by the worker.
RESERVED_HEADERS = frozenset(
    {"args", "kwargs", "callbacks", "errbacks", "chain", "chord", "called_directly", "is_eager",
     "delivery_info", "headers", "hostname", "properties", "reply_to", "correlation_id",
     "logfile", "loglevel", "taskset", "utc"}
)  # fmt: skip
EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})


def clean_text(value: object, limit: int) -> bool:
    """A non-empty string a database column can hold (no NUL, no lone surrogate)."""
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        return False
    return value.isascii() or _encodes(value)


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _optional_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _optional_int(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0)


def _timestamp(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        return False
    return True


def envelope_problem(entry: Any, *, max_eta: float | None = None) -> str | None:
    """Why kombu or Celery could not take ``entry`` (a decoded queue entry), or ``None``."""
    if not isinstance(entry, dict):
        return f"a queue entry must be a JSON object, not {type(entry).__name__}"
    properties = entry.get("properties")
    if not isinstance(properties, dict):
        return "properties: must be an object"
    if not clean_text(properties.get("delivery_tag"), MAX_ID_LENGTH):
        return "properties.delivery_tag: must be a string of 1-64 characters"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not isinstance(info.get("exchange", ""), str):
        return "properties.delivery_info: must be an object with string exchange and routing_key"
    if not isinstance(info.get("routing_key", ""), str):
        return "properties.delivery_info: must be an object with string exchange and routing_key"
    if properties.get("body_encoding") != "base64":
        return f"properties.body_encoding: must be 'base64', not {properties.get('body_encoding')!r:.40}"
    priority = properties.get("priority")
    if not (priority is None or (_optional_int(priority) and 0 <= priority <= 255)):
        return "properties.priority: must be an integer from 0 to 255"
    if not (_optional_str(properties.get("correlation_id")) and _optional_str(properties.get("reply_to"))):
        return "properties.correlation_id, reply_to: must be strings"
    if entry.get("content-type") != JSON:
        return f"content-type: only {JSON} is accepted, not {entry.get('content-type')!r:.60}"
    if entry.get("content-encoding") != "utf-8":
        return f"content-encoding: must be 'utf-8', not {entry.get('content-encoding')!r:.40}"
    if not isinstance(entry.get("body"), str):
        return "body: must be a base64 string"
    return headers_problem(entry.get("headers"), max_eta)


def headers_problem(headers: Any, max_eta: float | None) -> str | None:
    """Celery's protocol 2 headers, as its ``Request`` reads them."""
    if not isinstance(headers, dict):
        return "headers: must be an object"
    if not clean_text(headers.get("task"), MAX_NAME_LENGTH):
        return "headers.task: must be a task name of 1-128 characters"
    if not clean_text(headers.get("id"), MAX_ID_LENGTH):
        return "headers.id: must be a string of 1-64 characters"
    for name in ("shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr", "origin", "lang"):
        if not _optional_str(headers.get(name)):
            return f"headers.{name}: must be a string or null"
    for name in ("retries", "group_index", "replaced_task_nesting"):
        value = headers.get(name)
        if not _optional_int(value) or (value or 0) < 0:
            return f"headers.{name}: must be a non-negative integer or null"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list) and len(limits) == 2 and all(map(_number, limits))
    ):
        return "headers.timelimit: must be a pair [hard, soft] of seconds or nulls"
    if headers.get("ignore_result") not in (None, True, False):
        return "headers.ignore_result: must be a boolean"
    if not (headers.get("stamped_headers") is None or isinstance(headers["stamped_headers"], list)):
        return "headers.stamped_headers: must be a list or null"
    if not (headers.get("stamps") is None or isinstance(headers["stamps"], dict)):
        return "headers.stamps: must be an object or null"
    for name in ("eta", "expires"):
        if not _timestamp(headers.get(name)):
            return f"headers.{name}: must be an ISO 8601 date and time"
    eta = headers.get("eta")
    if eta and max_eta is not None and datetime.fromisoformat(eta).timestamp() > max_eta:
        return "headers.eta: further ahead than the broker's visibility timeout"
    reserved = RESERVED_HEADERS.intersection(headers)
    if reserved:
        return f"headers.{min(reserved)}: reserved for the worker"
    return None


def body_problem(body: Any) -> str | None:
    """A protocol 2 body, decoded: ``[args, kwargs, embed]``. Billing tasks chain nothing,
    so the embedded workflow (callbacks, errbacks, chain, chord) must be empty."""
    if not isinstance(body, list) or len(body) != 3:
        return "body: must be a JSON array [args, kwargs, embed]"
    args, kwargs, embed = body
    if not isinstance(args, list):
        return "body: args must be a JSON array"
    if not isinstance(kwargs, dict):
        return "body: kwargs must be a JSON object"
    if not isinstance(embed, dict) or not EMBED_KEYS.issuperset(embed):
        return "body: embed must be an object of callbacks, errbacks, chain and chord"
    if any(embed.values()):
        return "body: billing tasks take no callbacks, errbacks, chain or chord"
    return None
