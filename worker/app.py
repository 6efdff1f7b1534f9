"""The Celery app: ``celery -A worker.app worker`` (and ``beat``, ``flower``).

JSON only, late acknowledgement, one message prefetched at a time; task events as soon
as a monitor asks for them (Flower does), or always with ``BILLING_TASK_EVENTS``.
Producers send by task name (``billing.<resource>.<verb>``) with
``tasks.client.BillingClient``; nothing here is needed to enqueue.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    before_task_publish,
    worker_init,
    worker_process_init,
)
from kombu import Exchange, Queue

from tasks.broker import transport_for
from tasks.operations import ALL_QUEUES, QUEUE_DEFAULT, queue_for
from tasks.redaction import kwargsrepr
from worker import failpoints, metrics
from worker import logs as worker_logs
from worker.db import forget_inherited_engines
from worker.heartbeat import WorkerHeartbeat
from worker.quarantine import drain_quietly
from worker.settings import get_settings
from worker.tasks import register


def beat_schedule(
    reconcile_interval_s: float,
    renew_interval_s: float = 60.0,
    finalize_drafts_interval_s: float = 300.0,
    mark_overdue_interval_s: float = 3600.0,
) -> dict[str, dict[str, Any]]:
    """Beat jobs by task name. All are idempotent: two beat processes, or a replayed
    tick, publish the same follow-ups again and bill nothing twice."""
    return {
        # Publishes outbox rows never published or whose message was lost, and (if
        # enabled) invoices stale backlogs. Expires so that missed ticks don't pile up.
        "billing-reconcile": {
            "task": "billing.maintenance.reconcile",
            "schedule": reconcile_interval_s,
            "options": {"expires": reconcile_interval_s},
        },
        # Idempotency keys are kept BILLING_IDEMPOTENCY_KEY_RETENTION_S (>= 24 h), then forgotten.
        "billing-purge": {
            "task": "billing.maintenance.purge",
            "schedule": 3600.0,
            "options": {"expires": 3000},
        },
        # Asks for the next renewal of every subscription whose period has ended (one
        # idempotent renewal per subscription and period; missed periods follow in order).
        "billing-renew-subscriptions": {
            "task": "billing.maintenance.renew_subscriptions",
            "schedule": renew_interval_s,
            "options": {"expires": renew_interval_s},
        },
        # Finalizes auto_advance drafts an hour after they were made.
        "billing-finalize-drafts": {
            "task": "billing.maintenance.finalize_drafts",
            "schedule": finalize_drafts_interval_s,
            "options": {"expires": finalize_drafts_interval_s},
        },
        # Marks open send_invoice invoices past their due date as overdue.
        "billing-mark-overdue": {
            "task": "billing.maintenance.mark_overdue",
            "schedule": mark_overdue_interval_s,
            "options": {"expires": mark_overdue_interval_s},
        },
    }


def _route(name: str, *_: Any, **__: Any) -> dict[str, str]:
    return {"queue": queue_for(name)}


def celery_config(
    broker_url: str, visibility_timeout_s: int, restore_interval_s: int = 10, poll_interval_s: float = 1.0
) -> dict[str, Any]:
    """Broker and serialisation settings of the worker."""
    return {
        "broker_url": broker_url,
        # Takes a message and records it as unacked atomically (see tasks.broker).
        "broker_transport": transport_for(broker_url),
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_s,
            # kombu sweeps for expired unacked messages every interval x throttle seconds
            # (100 s by default); make the interval the only knob.
            "unacked_restore_interval": restore_interval_s,
            "unacked_restore_throttle": 1,
            # the in-process broker is polled; on Redis this is how long an idle consumer
            # blocks before looking again (producers' doorbells wake it sooner)
            "polling_interval": 0.05 if broker_url.startswith("memory") else poll_interval_s,
            # malformed entries never reach Celery: they are refused and recorded (README: Reliability)
            "check_entries": True,
            "refused_handler": drain_quietly,
        },
        "broker_connection_retry_on_startup": True,
        "task_default_queue": QUEUE_DEFAULT,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_app() -> Celery:
    settings = get_settings()
    celery = Celery("billing")
    celery.conf.update(
        celery_config(
            settings.broker_url,
            settings.visibility_timeout_s,
            settings.unacked_restore_interval_s,
            settings.broker_poll_interval_s,
        ),
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ALL_QUEUES],
        task_routes=(_route,),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_track_started=True,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(
            settings.reconcile_interval_s,
            settings.renew_interval_s,
            settings.finalize_drafts_interval_s,
            settings.mark_overdue_interval_s,
        ),
        worker_consumer="worker.consumer:BillingConsumer",
    )
    register(celery)
    return celery


app = create_app()


@worker_process_init.connect
def _fresh_connections_in_child(**_: Any) -> None:
    forget_inherited_engines()


@worker_init.connect
def _remember_main_process(**_: Any) -> None:
    failpoints.worker_main_pid = os.getpid()


# Logs (worker.logs): BILLING_LOG_FORMAT on Celery's handlers, passwords masked, BILLING_LOG_LEVEL on
# the project's loggers; task metrics (worker.metrics) when BILLING_METRICS_PORT is set.
after_setup_logger.connect(worker_logs.configure, weak=False)
after_setup_task_logger.connect(worker_logs.configure, weak=False)
worker_init.connect(metrics.setup, weak=False)


@before_task_publish.connect(weak=False)
def _redact_published(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    """What the worker publishes (retries, follow-ups, beat's jobs) shows monitors its arguments
    without personal data, as the client's messages do (``tasks.redaction``)."""
    if headers is None or not str(headers.get("task", "")).startswith("billing."):
        return
    kwargs = body[1] if isinstance(body, list | tuple) and len(body) > 1 else None
    if isinstance(kwargs, dict) and (shown := kwargsrepr(kwargs)) is not None:
        headers["kwargsrepr"] = shown


def _apply_run_limits(celery: Celery) -> None:
    """Time limits below every deploy file's stop grace, and the heartbeat file for liveness
    probes (README: Running it for real)."""
    settings = get_settings()
    celery.conf.update(
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        beat_scheduler="worker.heartbeat:HeartbeatScheduler",
    )
    if settings.heartbeat_file:
        celery.conf.beat_max_loop_interval = settings.heartbeat_interval_s
    celery.steps["consumer"].add(WorkerHeartbeat)


_apply_run_limits(app)
