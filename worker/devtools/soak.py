"""``billing soak``: random operations and random faults for N minutes, then the checker.

Needs the real thing (PostgreSQL and Redis from the settings). A seeded generator
chooses what to send and which fault to inject next: a worker killed with SIGKILL
(restarted like a supervisor would), a pool child killed mid-transaction, a crash
after commit or before publishing follow-ups (named failpoints), the same message
delivered twice. At the end the faults stop, the work drains, the reconciler runs,
and ``billing audit`` must find nothing; every item sent is either on exactly one
invoice, pending, or in a batch recorded as failed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.operations import ALL_QUEUES, queue_for

QUEUES = ",".join(ALL_QUEUES)
FAULT_POINTS = (
    "billing.invoices.create@before_commit=kill_child",
    "billing.invoices.create@after_commit=kill_worker",
    "billing.invoices.create@before_publish=kill_worker",
    "billing.invoice_items.create_many@after_commit=kill_child",
    "billing.invoices.finalize@before_commit=kill_worker",
)


def wait_for(
    condition: Callable[[], bool], timeout: float = 45.0, what: str = "condition", interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class WorkerProcess:
    """``celery -A worker.app worker`` in its own process group."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_dir: Path,
        concurrency: int = 1,
        app: str = "worker.app",
        queues: str = QUEUES,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.extra_args = extra_args
        self.queues = queues
        self.app = app
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", self.app, "worker", "--loglevel=INFO",
             f"--concurrency={self.concurrency}", "-Q", self.queues, "--without-mingle", "--without-gossip",
             "-n", f"{self.name}-{os.getpid()}@%h", *self.extra_args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_for(lambda: b"ready." in self.log_path.read_bytes(), 30, f"{self.name} to start")
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_dead(self, timeout: float = 30.0) -> None:
        wait_for(lambda: not self.alive, timeout, f"{self.name} to die")
        self.kill()  # the pool children, if the main process went alone

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Soak:
    def __init__(self, minutes: float, seed: int, workers: int, echo: Callable[[str], None]) -> None:
        from tasks.client import BillingClient
        from worker.settings import get_settings

        self.settings = get_settings()
        self.deadline = time.monotonic() + minutes * 60
        self.minutes = minutes
        self.random = random.Random(seed)
        self.seed = seed
        self.echo = echo
        self.directory = Path(tempfile.mkdtemp(prefix="billing-soak-"))
        self.env = {
            **os.environ,
            "BILLING_FAILPOINTS": ",".join(f"{point}:once" for point in FAULT_POINTS),
            "BILLING_FAILPOINT_DIR": str(self.directory),
            "BILLING_VISIBILITY_TIMEOUT_S": "5",
            "BILLING_UNACKED_RESTORE_INTERVAL_S": "1",
            "BILLING_OUTBOX_GRACE_S": "2",
            "BILLING_OUTBOX_REPUBLISH_AFTER_S": "15",
            # most of the soak's invoice requests find nothing pending for real (it picks
            # customers at random); two retries still cover a request that overtook its items
            "BILLING_NOTHING_PENDING_RETRIES": "2",
        }
        self.workers = [WorkerProcess(f"soak{i}", self.env, self.directory, 2) for i in range(workers)]
        self.client = BillingClient(broker_url=self.settings.broker_url)
        self.customers: list[tuple[str, str]] = []
        self.invoices: list[str] = []
        self.known_invoices: list[str] = []
        self.items_sent = 0
        self.operations: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self._arm_all()

    def _arm_all(self) -> None:
        for marker in self.directory.glob("failpoint-*.fired"):
            marker.unlink()

    # -- operations ------------------------------------------------------------------------
    def operate(self) -> None:
        choice = self.random.random()
        if not self.customers or choice < 0.05:
            currency = self.random.choice(("usd", "cad", "eur"))
            self.customers.append(
                (self.client.create_customer(email="soak@example.com", currency=currency), currency)
            )
            self.operations["customer"] += 1
            time.sleep(0.05)
            return
        customer, currency = self.random.choice(self.customers)
        if choice < 0.55:
            n = self.random.randint(1, 60)
            cur = currency if self.random.random() < 0.8 else self.random.choice(("usd", "cad", "eur"))
            batch = [
                {"customer": customer, "currency": cur, "amount": self.random.randint(-500, 20_000)}
                for _ in range(n)
            ]
            self.client.create_invoice_items(batch)
            self.items_sent += n
            self.operations["item_batch"] += 1
        elif choice < 0.75:
            params: dict[str, Any] = {
                "customer": customer,
                "currency": currency,
                "finalize": self.random.random() < 0.7,
                "idempotency_key": f"soak-{self.random.getrandbits(64):x}",
            }
            self.invoices.append(self.client.create_invoice(**params))
            if self.random.random() < 0.1:  # the same request sent twice
                self.client.create_invoice(**params)
                self.operations["duplicate"] += 1
            self.operations["invoice"] += 1
        elif choice < 0.85:
            self.client.create_balance_transaction(
                customer=customer, currency=currency, amount=-self.random.randint(1, 5000)
            )
            self.operations["adjustment"] += 1
        else:
            invoice = self._existing_invoice()
            if invoice is None:
                return
            action = self.random.choice(("finalize", "pay", "void", "credit_note"))
            if action == "credit_note":
                self.client.create_credit_note(invoice=invoice, amount=self.random.randint(1, 500))
            else:
                getattr(
                    self.client,
                    {"finalize": "finalize_invoice", "pay": "pay_invoice", "void": "void_invoice"}[action],
                )(invoice)
            self.operations[action] += 1

    def _existing_invoice(self) -> str | None:
        """A producer acts on invoices it knows exist: pick from the database, refreshed now and then."""
        if not self.known_invoices or self.random.random() < 0.02:
            from sqlalchemy import select
            from sqlmodel import col

            from worker.db import read_session
            from worker.tables import Invoice

            with read_session() as session:
                self.known_invoices = list(session.execute(select(col(Invoice.id)).limit(5000)).scalars())
        return self.random.choice(self.known_invoices) if self.known_invoices else None

    # -- faults ----------------------------------------------------------------------------
    def fault(self) -> None:
        kind = self.random.choice(("kill_worker", "rearm_failpoints", "kill_child"))
        worker = self.random.choice(self.workers)
        if kind == "kill_worker" and worker.alive:
            worker.kill()
        elif kind == "kill_child" and worker.alive and worker.process is not None:
            children = subprocess.run(
                ["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True
            )
            pids = [int(p) for p in children.stdout.split()]
            if not pids:
                return
            os.kill(self.random.choice(pids), signal.SIGKILL)
        elif kind == "rearm_failpoints":
            self._arm_all()
        else:
            return
        self.faults[kind] += 1

    def supervise(self) -> None:
        for worker in self.workers:
            if not worker.alive:
                worker.kill()
                worker.start()
                self.faults["restarts"] += 1

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        from worker.migrate import upgrade

        upgrade()
        try:
            return self._run()
        finally:
            for worker in self.workers:
                worker.stop()

    def _run(self) -> int:
        from sqlalchemy import func, select
        from sqlmodel import col

        from worker.audit import audit_database
        from worker.db import read_session
        from worker.tables import InvoiceItem, OutboxMessage, TaskFailure

        for worker in self.workers:
            worker.start()
        next_fault = time.monotonic() + self.random.uniform(2, 6)
        while time.monotonic() < self.deadline:
            self.operate()
            if time.monotonic() >= next_fault:
                self.fault()
                next_fault = time.monotonic() + self.random.uniform(2, 6)
            self.supervise()
            time.sleep(self.random.uniform(0, 0.02))
        self.env["BILLING_FAILPOINTS"] = ""
        for worker in self.workers:
            worker.stop()
            worker.start()
        drain_started = time.monotonic()

        def settled() -> bool:
            self.supervise()
            self.client.app.send_task(
                "billing.maintenance.reconcile", queue=queue_for("billing.maintenance.reconcile")
            )
            time.sleep(3)
            with read_session() as session:
                open_rows = session.execute(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(col(OutboxMessage.done_at).is_(None))
                ).scalar_one()
            return open_rows == 0 and self._broker_empty()

        wait_for(settled, timeout=900, what="the work to drain")
        with read_session() as session:
            items = session.execute(select(func.count()).select_from(InvoiceItem)).scalar_one()
            failures = list(session.execute(select(TaskFailure)).scalars())
        failed_items = sum(
            len(f.payload.get("items", [])) if f.task_name.endswith("create_many") else 1
            for f in failures
            if f.task_name.startswith("billing.invoice_items.") and f.payload
        )
        violations = audit_database()
        self.echo(
            f"soak: {self.minutes} min, seed {self.seed},"
            f" {sum(self.operations.values())} requests {dict(self.operations)}"
        )
        self.echo(
            f"soak: faults injected {dict(self.faults)}; drained in {time.monotonic() - drain_started:.0f} s"
        )
        self.echo(
            f"soak: items sent {self.items_sent} = stored {items}"
            f" + in recorded failed requests {failed_items}"
            f"; task failures {dict(Counter(f.error_type for f in failures))}"
        )
        lost = self.items_sent - items - failed_items
        self.echo(f"soak: items lost {lost}; audit violations {len(violations)}")
        for violation in violations:
            self.echo(f"  {violation}")
        return 1 if violations or lost else 0

    def _broker_empty(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.settings.broker_url)
        return sum(client.llen(q) for q in QUEUES.split(",")) == 0 and client.hlen("unacked") == 0


def run_soak(minutes: float, seed: int, workers: int, echo: Callable[[str], None]) -> int:
    from worker.settings import get_settings

    settings = get_settings()
    if not settings.broker_url.startswith("redis") or not settings.database_url.startswith("postgresql"):
        echo("soak needs BILLING_BROKER_URL=redis://... and BILLING_DATABASE_URL=postgresql+psycopg://...")
        return 2
    return Soak(minutes, seed, workers, echo).run()
