"""The worker's task metrics (Prometheus), its task log line, and beat jobs' last success.

Every finished task is counted by name and outcome, its duration observed, and its line logged
(``worker.logs.task_line``), from Celery's ``task_prerun``/``task_postrun`` signals in the pool
process that ran it. A message of a batch (``worker.tasks.batches``) is a task of its own here as
in Flower: its duration is its batch's.

Under prefork the counts live in the pool processes, so they are kept with prometheus_client's
multiprocess mode: with ``BILLING_METRICS_PORT`` set, the worker's main process, before it forks
its pool, points ``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own (the one the variable
names, emptied of a previous run's files, else a fresh temporary one), and serves ``/metrics``
on that port, summing every pool process's file. One directory per worker: two workers must not
share one. Off (the default), nothing is counted and no port is opened; the log line stays.

The queue, outbox, pending-item, dead-letter and beat gauges are not here: they describe the
deployment, not one worker, and ``billing exporter`` reads them on each scrape
(``worker.exporter``). A beat job's success is written where it reads it: the Redis hash
``BEAT_LAST_SUCCESS_KEY`` (job name -> Unix time), by the worker that ran the job.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun

from tasks.operations import OPERATIONS
from worker.logs import task_line
from worker.quarantine import client_for
from worker.settings import get_settings

log = logging.getLogger("billing.metrics")

BEAT_LAST_SUCCESS_KEY = "_billing.beat.last_success"
"""Redis hash: beat job (task name) -> Unix time of its last success."""

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_enabled = False
_metrics: tuple[Any, Any] | None = None
_started: dict[str, float] = {}
"""Task id -> when it started, in this process (a batch's messages take their batch's start)."""
_running: list[float] = []


def setup(**_: Any) -> None:
    """``worker_init``, in the main process before the pool forks: the multiprocess directory
    and the metrics port, when ``BILLING_METRICS_PORT`` is set."""
    global _enabled
    settings = get_settings()
    if not settings.metrics_port:
        return
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):  # a previous run's counts: this worker starts at 0
            stale.unlink()
    else:
        directory = tempfile.mkdtemp(prefix="billing-metrics-")
        owner = os.getpid()

        def remove() -> None:
            if os.getpid() == owner:  # not in a pool process that exits
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    # prometheus_client chooses how values are stored when it is first imported: choose again,
    # now that the directory is set (the pool processes inherit the choice)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # untyped in 0.2x
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # untyped
    start_http_server(settings.metrics_port, addr=settings.metrics_address, registry=registry)
    _enabled = True
    log.info("task metrics on %s:%d/metrics", settings.metrics_address, settings.metrics_port)


def _task_metrics() -> tuple[Any, Any]:
    global _metrics
    if _metrics is None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry(auto_describe=True)  # not the default one: the files are the registry
        _metrics = (
            Counter(
                "billing_tasks",
                "Tasks finished, by task name and outcome (success, failure, retry, ...)",
                ["task", "outcome"],
                registry=registry,
            ),
            Histogram(
                "billing_task_duration_seconds",
                "How long tasks ran, by task name and outcome",
                ["task", "outcome"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
        )
    return _metrics


def _is_batch(args: Any) -> bool:
    """The postrun of a whole batch (celery-batches): its messages are counted one by one."""
    return (
        isinstance(args, list | tuple)
        and len(args) == 1
        and isinstance(args[0], list)
        and bool(args[0])
        and all(hasattr(r, "request_dict") for r in args[0])
    )


@task_prerun.connect(weak=False)
def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    now = time.monotonic()
    if task_id:
        _started[task_id] = now
    _running.append(now)


@task_postrun.connect(weak=False)
def _on_postrun(
    sender: Any = None,
    task_id: str | None = None,
    args: Any = None,
    kwargs: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    name = str(getattr(sender, "name", None) or "unknown")
    start = _started.pop(task_id, None) if task_id else None
    if start is not None and _running:
        _running.pop()
    if _is_batch(args):
        return
    if start is None and _running:  # a message of the batch running now
        start = _running[-1]
    duration = None if start is None else time.monotonic() - start
    outcome = (state or "unknown").lower()
    try:
        if _enabled:
            total, durations = _task_metrics()
            total.labels(name, outcome).inc()
            if duration is not None:
                durations.labels(name, outcome).observe(duration)
        task_line(name, task_id, kwargs, outcome, duration)
        operation = OPERATIONS.get(name)
        if outcome == "success" and operation is not None and operation.kind in ("job", "sweep"):
            _beat_job_succeeded(name)
    except Exception:  # never the task's failure
        log.exception("could not count task %s", name)


def _beat_job_succeeded(name: str) -> None:
    url = get_settings().broker_url
    if url.startswith(("redis://", "rediss://")):
        client_for(url).hset(BEAT_LAST_SUCCESS_KEY, name, repr(time.time()))
