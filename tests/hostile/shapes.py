"""Hostile queue entries, as a buggy or hostile producer in another language would push them
with a raw ``LPUSH``: every one must be recorded once and acknowledged, never stop a worker.

``SHAPES`` maps a name to a function of the queue that returns the raw entry (bytes) and the
task id its record must carry (``None``: the entry names no usable id, so the record is
numbered ``refused:<n>``).
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from collections.abc import Callable
from typing import Any

from tasks.ids import new_id

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
Shape = Callable[[str], tuple[bytes, str | None]]


def customer_kwargs() -> dict[str, Any]:
    customer_id = new_id("cus")
    return {"id": customer_id, "idempotency_key": customer_id, "email": "canary@example.com"}


def envelope(
    queue: str, task: str = "billing.customers.create", body: Any = None, **options: Any
) -> dict[str, Any]:
    """A healthy envelope, as kombu and Celery write one for ``send_task``."""
    task_id = str(uuid.uuid4())
    if body is None:
        body = [[], customer_kwargs(), EMBED]
    raw_body = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {
        "body": base64.b64encode(raw_body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
            "root_id": task_id, "parent_id": None, "argsrepr": "()", "kwargsrepr": "{}",
            "origin": "hostile@test", "ignore_result": False, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": queue, "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
        **options,
    }  # fmt: skip


def raw(entry: bytes) -> Shape:
    return lambda queue: (entry, None)


def changed(change: Callable[[dict[str, Any]], Any], *, keeps_id: bool = True, **options: Any) -> Shape:
    """A healthy envelope with one thing changed (``change`` edits it in place)."""

    def shape(queue: str) -> tuple[bytes, str | None]:
        entry = envelope(queue, **options)
        task_id = entry["headers"]["id"]
        change(entry)
        return json.dumps(entry).encode(), task_id if keeps_id else None

    return shape


def set_path(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(entry: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = entry
        for part in parents:
            target = target[part]
        target[last] = value

    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(entry: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = entry
        for part in parents:
            target = target[part]
        del target[last]

    return change


def body(value: Any) -> Callable[[dict[str, Any]], None]:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    return set_path("body", base64.b64encode(data).decode())


ITEM = "billing.invoice_items.create"
ITEM_KWARGS = {
    "customer": "cus_X",
    "amount": 1,
    "currency": "usd",
    "id": new_id("ii"),
    "idempotency_key": "k",
}
INVOICE = "billing.invoices.create"
DEEP = b"[" * 100_000 + b"]" * 100_000

SHAPES: dict[str, Shape] = {
    # not an envelope at all
    "not-json": raw(b"hello, billing"),
    "binary": raw(b"\xff\xfe\x00\x01binary\x80"),
    "empty": raw(b""),
    "json-number": raw(b"42"),
    "json-string": raw(b'"a string"'),
    "json-list": raw(b"[1, 2, 3]"),
    "json-null": raw(b"null"),
    "json-nan": raw(b"NaN"),
    "deep-nesting": raw(DEEP),
    "deep-in-envelope": raw(b'{"properties": {"delivery_tag": "t", "x": ' + DEEP + b"}}"),
    "empty-object": raw(b"{}"),
    # the kombu envelope
    "properties-missing": changed(drop("properties"), keeps_id=False),
    "properties-null": changed(set_path("properties", None), keeps_id=False),
    "properties-list": changed(set_path("properties", [1]), keeps_id=False),
    "delivery-tag-missing": changed(drop("properties.delivery_tag"), keeps_id=False),
    "delivery-tag-number": changed(set_path("properties.delivery_tag", 12), keeps_id=False),
    "delivery-tag-huge": changed(set_path("properties.delivery_tag", "t" * 1000), keeps_id=False),
    "delivery-info-missing": changed(drop("properties.delivery_info")),
    "delivery-info-null": changed(set_path("properties.delivery_info", None)),
    "priority-out-of-range": changed(set_path("properties.priority", 999)),
    "body-missing": changed(drop("body")),
    "body-null": changed(set_path("body", None)),
    "body-number": changed(set_path("body", 5)),
    "body-not-base64": changed(set_path("body", "!!! not base64 ***")),
    "body-base64-not-json": changed(body(b"\x00\xffnot json")),
    "body-encoding-unknown": changed(set_path("properties.body_encoding", "rot13")),
    "body-encoding-missing": changed(drop("properties.body_encoding")),
    "content-type-pickle": changed(
        lambda e: (
            e.update({"content-type": "application/x-python-serialize"})
            or body(pickle.dumps(((), {"id": "cus_PICKLE"}, {})))(e)
        )
    ),
    "content-type-yaml": changed(
        lambda e: e.update({"content-type": "application/x-yaml"}) or body(b"- []\n- {}\n- {}\n")(e)
    ),
    "content-type-missing": changed(drop("content-type")),
    "content-encoding-unknown": changed(set_path("content-encoding", "gzip")),
    "content-encoding-binary": changed(set_path("content-encoding", "binary")),
    # Celery's headers
    "headers-missing": changed(drop("headers"), keeps_id=False),
    "headers-null": changed(set_path("headers", None), keeps_id=False),
    "headers-list": changed(set_path("headers", ["task"]), keeps_id=False),
    "task-missing": changed(drop("headers.task")),
    "task-number": changed(set_path("headers.task", 7)),
    "task-unknown": changed(set_path("headers.task", "billing.invoices.explode")),
    "task-huge": changed(set_path("headers.task", "billing." + "x" * 500)),
    "id-object": changed(set_path("headers.id", {"a": 1}), keeps_id=False),
    "id-missing": changed(drop("headers.id"), keeps_id=False),
    "id-huge": changed(set_path("headers.id", "i" * 200), keeps_id=False),
    "id-nul": changed(set_path("headers.id", "abc\x00def"), keeps_id=False),
    "timelimit-number": changed(set_path("headers.timelimit", 7)),
    "timelimit-short": changed(set_path("headers.timelimit", [1])),
    "timelimit-strings": changed(set_path("headers.timelimit", ["a", "b"])),
    "eta-garbage": changed(set_path("headers.eta", "not a date")),
    "eta-far-future": changed(set_path("headers.eta", "9000-01-01T00:00:00+00:00")),
    "expires-garbage": changed(set_path("headers.expires", "tomorrow-ish")),
    "retries-string": changed(set_path("headers.retries", "3")),
    "retries-negative": changed(set_path("headers.retries", -1)),
    "reserved-header": changed(set_path("headers.is_eager", True)),
    "shadow-number": changed(set_path("headers.shadow", 1)),
    # the body
    "body-json-string": changed(body("a string")),
    "body-pair": changed(body([[], {}])),
    "body-kwargs-list": changed(body([[], [1, 2], {}])),
    "body-args-object": changed(body([{}, {}, {}])),
    "body-embed-chain": changed(body([[], {}, {**EMBED, "chain": [{"task": "x"}]}])),
    "body-embed-unknown": changed(body([[], {}, {**EMBED, "delivery_info": 5}])),
    "batch-body-json-string": changed(body("a string"), task=ITEM),
    "batch-kwargs-list": changed(body([[], [1, 2], {}]), task=ITEM),
    "invoice-batch-kwargs-list": changed(body([[], [1, 2], {}]), task=INVOICE),
    # well-formed messages the worker refuses as a task failure
    "positional-args": changed(body([[1, 2], {}, EMBED])),
    "kwargs-nul": changed(body([[], {**customer_kwargs(), "description": "a\x00b"}, EMBED])),
    "kwargs-surrogate": changed(body([[], {**customer_kwargs(), "name": "\ud800"}, EMBED])),
    "batch-kwargs-nul": changed(body([[], {**ITEM_KWARGS, "metadata": {"k": "\x00"}}, EMBED]), task=ITEM),
    "huge-body": changed(body([[], {**customer_kwargs(), "description": "x" * 10_000_000}, EMBED])),
    "huge-garbage": raw(b"x" * 10_000_000),
}
