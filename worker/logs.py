"""Logs: one line per task, JSON or text, with passwords masked and no personal data.

- ``BILLING_LOG_FORMAT``: ``json`` (one JSON object per line: what the deploy files set) or
  ``text`` (the default, for a terminal). Celery's own handlers keep their streams; only their
  formatter changes, in workers and beat alike (``worker.app`` connects ``configure`` to Celery's
  logging signals).
- ``BILLING_LOG_LEVEL``: the level of the project's loggers (``billing.*``); Celery's
  ``--loglevel`` sets the rest.
- Every line, in both formats, goes through ``mask_secrets``: the password of any URL
  (``scheme://user:password@host``) and any ``password=`` pair become ``***``.
- The task line (``billing.task``, INFO): task name, task id, idempotency key, customer id,
  outcome and duration. Never the payload: customers' emails, names, phones and addresses are
  not logged (a failure's payload is kept in ``task_failures``, not in the log). Celery's own
  lines carry the redacted ``kwargsrepr`` (``tasks.redaction``) where they show arguments.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from worker.settings import get_settings

TASK_LOGGER = "billing.task"

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)@")
_PAIR_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*[=:]\s*)(?P<secret>[^\s&;,'\"]+)", re.I)


def mask_secrets(text: str) -> str:
    """``text`` with every URL's password and every ``password=…`` value replaced by ``***``."""
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    if "pw" in text.lower() or "pass" in text.lower():
        text = _PAIR_PASSWORD.sub(r"\g<head>***", text)
    return text


class MaskingFormatter(logging.Formatter):
    """Another formatter's lines (Celery's, colours and all) with secrets masked."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(self.inner.format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, the fields the project
    attaches (``extra={"billing": {...}}``), and the exception's traceback when there is one.
    Other ``extra`` attributes are left out on purpose: Celery attaches a failed task's
    arguments as ``extra={"data": ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        fields = getattr(record, "billing", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return mask_secrets(json.dumps(line, ensure_ascii=False, default=str))


def formatter_for(fmt: str, inner: logging.Formatter | None = None) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else MaskingFormatter(inner)


def configure(logger: logging.Logger | None = None, **_: Any) -> None:
    """Give every handler of ``logger`` (default: the root logger) the configured format, and
    the project's loggers their level. Connected to Celery's ``after_setup_logger`` and
    ``after_setup_task_logger``; called by the CLI too. Idempotent."""
    settings = get_settings()
    logging.getLogger("billing").setLevel(settings.log_level)
    target = logger or logging.getLogger()
    for handler in target.handlers:
        current = handler.formatter
        if isinstance(current, JsonFormatter | MaskingFormatter):
            current = current.inner if isinstance(current, MaskingFormatter) else None
        handler.setFormatter(formatter_for(settings.log_format, current))


def configure_cli() -> None:
    """The CLI's own logging: warnings and errors on stderr, in the configured format."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)  # the commands' own output is what they print
        root.addHandler(handler)
    configure(root)


def customer_of(task_name: str, kwargs: Any) -> str | None:
    """The customer a request is about, from its payload: ``customer``, or the id a customer
    create names; ``None`` when it names none or several (a batch of items)."""
    if not isinstance(kwargs, dict):
        return None
    customer = kwargs.get("customer")
    if customer is None and task_name == "billing.customers.create":
        customer = kwargs.get("id")
    return customer if isinstance(customer, str) else None


def task_line(
    task_name: str, task_id: str | None, kwargs: Any, outcome: str, duration_s: float | None
) -> None:
    """Log the line of one finished task (INFO on ``billing.task``)."""
    log = logging.getLogger(TASK_LOGGER)
    if not log.isEnabledFor(logging.INFO):
        return
    key = kwargs.get("idempotency_key") if isinstance(kwargs, dict) else None
    fields = {
        "task": task_name,
        "task_id": task_id,
        "idempotency_key": key if isinstance(key, str) else None,
        "customer": customer_of(task_name, kwargs),
        "outcome": outcome,
        "duration_ms": None if duration_s is None else round(duration_s * 1000, 2),
    }
    text = f"{task_name}[{task_id}] {outcome}"
    if duration_s is not None:
        text += f" in {duration_s * 1000:.1f} ms"
    extras = " ".join(f"{k}={v}" for k, v in fields.items() if k in ("idempotency_key", "customer") and v)
    log.info("%s%s", text, f" ({extras})" if extras else "", extra={"billing": fields})
