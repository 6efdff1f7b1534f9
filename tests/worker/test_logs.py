"""Logs: passwords masked in every line, one JSON object per line with the project's fields only,
and task arguments shown without personal data (``worker.logs``, ``tasks.redaction``)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tasks.redaction import REDACTED, kwargsrepr, redacted
from worker.logs import JsonFormatter, MaskingFormatter, configure, mask_secrets, task_line
from worker.settings import get_settings


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "postgresql+psycopg://billing_app:p%40ss@db:5432/billing",
            "postgresql+psycopg://billing_app:***@db:5432/billing",
        ),
        ("broker redis://billing:hunter2@redis:6379/0 down", "broker redis://billing:***@redis:6379/0 down"),
        ("rediss://:only-a-password@cache:6380/1", "rediss://:***@cache:6380/1"),
        ("host=db user=app password=hunter2 dbname=billing", "host=db user=app password=*** dbname=billing"),
        ("redis://redis:6379/0 and sqlite:///billing.db", "redis://redis:6379/0 and sqlite:///billing.db"),
        ("ada@example.com wrote", "ada@example.com wrote"),
    ],
)
def test_passwords_in_urls_and_pairs_are_masked(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "billing.x", "levelname": "INFO", "levelno": 20, "msg": message,
                                  "args": args, **extra})  # fmt: skip


def test_json_lines_carry_the_projects_fields_and_nothing_celery_attaches() -> None:
    record = _record(
        "connect %s failed", "postgresql://app:hunter2@db/billing",
        billing={"task": "billing.customers.create", "outcome": "success"},
        data={"args": "('ada@example.com',)", "kwargs": "{'email': 'ada@example.com'}"},  # Celery's extra
    )  # fmt: skip
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["message"] == "connect postgresql://app:***@db/billing failed"
    assert (parsed["task"], parsed["outcome"], parsed["level"]) == (
        "billing.customers.create",
        "success",
        "INFO",
    )
    assert "hunter2" not in line and "ada@example.com" not in line
    text = MaskingFormatter(logging.Formatter("%(message)s")).format(record)
    assert text == "connect postgresql://app:***@db/billing failed"


def test_the_format_is_a_setting_and_the_task_line_names_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_LOG_FORMAT", "JSON")
    get_settings.cache_clear()
    stream = io.StringIO()
    logger = logging.getLogger("test.ops.logs")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    task_logger = logging.getLogger("billing.task")
    task_logger.addHandler(handler)
    try:
        configure(logger)
        configure(logger)  # idempotent
        assert isinstance(handler.formatter, JsonFormatter)
        task_line(
            "billing.customers.update", "t-1",
            {"customer": "cus_1", "idempotency_key": "k-1", "email": "ada@example.com", "name": "Ada"},
            "success", 0.0123,
        )  # fmt: skip
    finally:
        task_logger.removeHandler(handler)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    fields = ("task", "task_id", "idempotency_key", "customer", "outcome", "duration_ms")
    assert {k: line[k] for k in fields} == {
        "task": "billing.customers.update", "task_id": "t-1", "idempotency_key": "k-1", "customer": "cus_1",
        "outcome": "success", "duration_ms": 12.3,
    }  # fmt: skip
    assert "ada@example.com" not in stream.getvalue() and "Ada" not in stream.getvalue()

    monkeypatch.setenv("BILLING_LOG_FORMAT", "text")
    get_settings.cache_clear()
    logger.addHandler(handler)
    try:
        configure(logger)
    finally:
        logger.removeHandler(handler)
    assert isinstance(handler.formatter, MaskingFormatter)


def test_task_arguments_are_shown_without_personal_data(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = {
        "id": "cus_1", "email": "ada@example.com", "name": "Ada", "phone": "+1 555",
        "metadata": {"plan": "pro"},
        "address": {"line1": "1 Main St"}, "shipping": {"name": "Ada", "address": {"city": "X"}},
        "tax_id_data": [{"type": "eu_vat", "value": "DE123"}], "description": None,
    }  # fmt: skip
    assert redacted(payload) == {**payload, **dict.fromkeys(
        ("email", "name", "phone", "address", "shipping", "tax_id_data"), REDACTED)}  # fmt: skip
    shown = kwargsrepr(payload)
    assert shown is not None and "ada@example.com" not in shown and "DE123" not in shown and "pro" in shown
    monkeypatch.setenv("BILLING_REDACT_TASK_ARGS", "false")
    assert kwargsrepr(payload) is None  # Celery's own repr: everything


def test_a_long_list_is_redacted_only_as_far_as_it_can_be_shown() -> None:
    from tasks.redaction import LIST_ITEMS_SHOWN

    batch = {"items": [{"customer": "cus_1", "name": "Ada"} for _ in range(1000)]}
    shown = redacted(batch)["items"]
    assert len(shown) == LIST_ITEMS_SHOWN + 1 and shown[-1] == "..."
    assert shown[0] == {"customer": "cus_1", "name": REDACTED}
    shown_repr = kwargsrepr(batch) or ""
    assert len(shown_repr) < 1100 and "Ada" not in shown_repr  # saferepr bounds it roughly
