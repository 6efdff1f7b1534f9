"""Operations on a real worker process (prefork, Redis, PostgreSQL): its task metrics port, the
exporter's gauges, one JSON log line per task, and no password or personal data in its logs."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.engine import make_url

from tasks.client import BillingClient
from tests.faults.harness import free_port
from tests.support import count
from worker.devtools.soak import WorkerProcess, wait_for
from worker.exporter import serve
from worker.settings import Settings
from worker.tables import Customer, Document, Invoice, TaskFailure

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

PASSWORD = "s3cret-Pa55"  # PostgreSQL here trusts local connections: the password is carried, never checked


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One scrape, as Prometheus reads it (prometheus_client's parser of the text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def deployment(postgres: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis.Redis.from_url(redis_url).flushdb()
    database_url = make_url(postgres).set(password=PASSWORD).render_as_string(hide_password=False)
    metrics_port, exporter_port = free_port(), free_port()
    env = {
        "BILLING_DATABASE_URL": database_url,
        "BILLING_BROKER_URL": redis_url,
        "BILLING_METRICS_PORT": str(metrics_port),
        "BILLING_METRICS_ADDRESS": "127.0.0.1",
        "BILLING_LOG_FORMAT": "json",
        "BILLING_ENV_FILE": "",
    }
    exporter = serve(Settings(_env_file=None, **{"database_url": database_url, "broker_url": redis_url}),
                     exporter_port, "127.0.0.1")  # fmt: skip
    worker = WorkerProcess("ops", {**os.environ, **env}, tmp_path, concurrency=2)
    try:
        yield {"worker": worker, "metrics": metrics_port, "exporter": exporter_port, "broker": redis_url}
    finally:
        worker.stop()
        exporter.shutdown()
        exporter.server_close()


def test_metrics_move_on_a_running_worker_and_its_logs_are_one_json_line_per_task(
    deployment: dict[str, Any],
) -> None:
    client = BillingClient(broker_url=deployment["broker"])
    exporter, worker = deployment["exporter"], deployment["worker"]

    # queued before any worker runs: the exporter sees it waiting; nothing finalized yet (primed)
    cus = client.create_customer(email="ada@example.com", name="Ada Lovelace", phone="+44 20 7946 0000")
    before = scrape(exporter)
    assert value(before, "billing_exporter_up", source="redis") == 1.0
    assert value(before, "billing_exporter_up", source="database") == 1.0
    assert value(before, "billing_queue_messages", queue="billing.default") == 1.0
    assert value(before, "billing_queue_messages", queue="billing.items") == 0.0
    assert value(before, "billing_task_failures", status="open") == 0.0
    assert value(before, "billing_parked_messages") == 0.0

    worker.start()
    wait_for(lambda: count(Customer) == 1, what="the customer")
    client.create_invoice_items([{"customer": cus, "currency": "usd", "amount": 100 * n} for n in (1, 2, 3)])
    wait_for(lambda: value(scrape(exporter), "billing_pending_invoice_items", currency="usd") == 3.0,
             what="3 pending USD items")  # fmt: skip
    pending = scrape(exporter)
    assert value(pending, "billing_queue_messages", queue="billing.default") == 0.0
    assert (value(pending, "billing_pending_invoice_items_oldest_age_seconds", currency="usd") or -1) >= 0
    client.create_invoice(customer=cus, currency="usd", finalize=True, idempotency_key="ops-metrics")
    wait_for(lambda: count(Invoice) == 1, what="the invoice")
    # its document request (a follow-up on billing.documents) is done too: no outbox row left open
    wait_for(lambda: count(Document) == 1, timeout=60, what="the invoice's document")
    # bad input: final at once, recorded as a dead letter
    client.app.send_task("billing.customers.create", kwargs={"id": "bad-id"}, queue="billing.default")
    wait_for(lambda: count(TaskFailure) == 1, what="the dead letter")
    client.app.send_task("billing.maintenance.purge", queue="billing.recurring")

    def worker_counted() -> bool:
        samples = scrape(deployment["metrics"])
        return (
            value(samples, "billing_tasks_total", task="billing.invoices.create", outcome="success") == 1.0
            and value(samples, "billing_tasks_total", task="billing.maintenance.purge", outcome="success")
            == 1.0
        )

    wait_for(worker_counted, what="the worker's task counts")
    tasks = scrape(deployment["metrics"])
    assert value(tasks, "billing_tasks_total", task="billing.customers.create", outcome="success") == 1.0
    assert value(tasks, "billing_tasks_total", task="billing.customers.create", outcome="failure") == 1.0
    many = "billing.invoice_items.create_many"
    assert value(tasks, "billing_tasks_total", task=many, outcome="success") == 1.0
    assert value(tasks, "billing_task_duration_seconds_count", task="billing.invoices.create",
                 outcome="success") == 1.0  # fmt: skip
    assert (value(tasks, "billing_task_duration_seconds_sum", task="billing.invoices.create",
                  outcome="success") or 0) > 0  # fmt: skip

    after = scrape(exporter)
    assert value(after, "billing_invoices_finalized_total", currency="usd") == 1.0
    assert value(after, "billing_invoice_lines_finalized_total", currency="usd") == 3.0
    assert value(after, "billing_pending_invoice_items", currency="usd") is None  # none left
    assert value(after, "billing_task_failures", status="open") == 1.0
    assert (value(after, "billing_beat_last_success_timestamp_seconds", job="billing.maintenance.purge")
            or 0) > 0  # fmt: skip
    assert value(after, "billing_outbox_open_rows") == 0.0
    for queue in ("billing.default", "billing.items", "billing.invoices", "billing.recurring"):
        assert value(after, "billing_queue_unacked_messages", queue=queue) == 0.0

    worker.stop()
    log = worker.log()
    for secret in (PASSWORD, "ada@example.com", "Lovelace", "7946"):
        assert secret not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    task_lines = [line for line in lines if line["logger"] == "billing.task"]
    created = [
        line for line in task_lines if line["task"] == "billing.customers.create" and line["customer"] == cus
    ]
    assert len(created) == 1, created
    assert created[0]["outcome"] == "success" and created[0]["duration_ms"] > 0
    assert created[0]["task_id"] and created[0]["idempotency_key"]
    invoiced = [line for line in task_lines if line["task"] == "billing.invoices.create"]
    assert [(line["idempotency_key"], line["customer"], line["outcome"]) for line in invoiced] == [
        ("ops-metrics", cus, "success")
    ]
    assert [line["outcome"] for line in task_lines if line["customer"] is None and
            line["task"] == "billing.customers.create"] == []  # fmt: skip  # the bad one names "id" only
    assert {"ts", "level", "message", "process"} <= set(created[0])


def test_billing_exporter_serves_and_prints_its_urls_masked(postgres: str, redis_url: str) -> None:
    """The command the deploy files run: it answers a scrape, and what it prints names no password."""
    import subprocess
    import sys

    port = free_port()
    database_url = make_url(postgres).set(password=PASSWORD).render_as_string(hide_password=False)
    env = {**os.environ, "BILLING_DATABASE_URL": database_url, "BILLING_BROKER_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli import run; run()", "exporter", f"--port={port}",
         "--address=127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith(f"billing exporter on 127.0.0.1:{port}/metrics")
        assert "postgres:***@" in banner and PASSWORD not in banner
        wait_for(lambda: value(scrape(port), "billing_exporter_up", source="database") == 1.0, 30, "a scrape")
        assert value(scrape(port), "billing_exporter_up", source="redis") == 1.0
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0 and PASSWORD not in output
