"""``billing bench``: throughput of the project's hot paths against bare baselines (issue 4).

Self-contained: on PostgreSQL + Redis (from the settings) it creates and drops its own
databases (``billing_bench*``) on the settings' server and uses its own Redis database
(``--redis-db``, 12 by default, flushed at the start); on the embedded default it uses
SQLite files in a temporary directory, the in-process broker and an in-process worker.
Each backend runs in a child process; every figure is measured ``--runs`` times, the
project's path and its baseline side by side in each run, and the ratios are taken per run.

Figures (the issue's targets in brackets, checked on PostgreSQL):
- ingestion through the broker via the client's list call, vs a plain executemany of the
  same rows (>= 0.5x), vs one task per item inserting with the ORM (>= 50x), >= 20k items/s;
- single-item messages vs a no-op Celery task (>= 0.8x);
- invoice generation (``create_invoice`` with finalize, per customer: 250 pending items
  each, 3 currencies, a third with credit, a fifth with a coupon) vs a bare script that
  claims 250 with one UPDATE … RETURNING, inserts the invoice, updates totals and balance
  and commits (>= 0.6x); cost per item flat within 25 % from the smallest to the largest size;
- the worker's resident memory (process tree) idle and at peak during each generation run
  (peak <= idle + 100 MiB). Every run of the project's paths ends with ``billing audit`` clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.operations import BILLING_QUEUES, QUEUE_ITEMS

QUEUES = BILLING_QUEUES
"""The queues the benchmark's workers consume and wait on: the billing ones. Document requests
(one per finalized invoice) are published and left queued, as for a deployment whose document
workers run elsewhere: the billing path pays for the outbox row and the publish, not the render."""
CURRENCIES = ("usd", "eur", "gbp")
ITEMS_PER_CUSTOMER = 250
COUPON = "co_BENCH10"
WARM_UP_PER_PROCESS = 8
"""Invoices per pool process before the clock starts: psycopg prepares a statement on its
fifth run, so each process has its hot statements prepared when the measurement begins."""


# -- options ---------------------------------------------------------------------------------
@dataclass
class Options:
    items: int = 100_000
    single: int = 5_000
    naive: int = 1_000
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    runs: int = 3
    concurrency: int = field(default_factory=lambda: (os.cpu_count() or 1) + 1)
    """One more process than cores: each waits on PostgreSQL part of the time (measured here:
    2 -> 3 processes on 2 cores, generation at 10k 0.56 -> 0.63 of the bare script)."""
    redis_db: int = 12
    database: str = "billing_bench"
    stages: tuple[str, ...] = ("ingestion", "generation")

    @classmethod
    def smoke(cls, **overrides: Any) -> Options:
        small: dict[str, Any] = {
            "items": 2_000,
            "single": 200,
            "naive": 100,
            "sizes": (1_000, 2_000),
            "runs": 1,
        }
        return cls(**(small | overrides))


@dataclass
class Results:
    backend: str
    figures: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    violations: int = 0

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)


# -- processes and memory --------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for current in pids:
        with contextlib.suppress(OSError):
            pids.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
    return pids


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (a prefork worker and its pool)."""
    return sum(_rss_kib(p) for p in _tree(pid)) / 1024


class PeakSampler:
    def __init__(self, measure: Callable[[], float], interval: float = 0.05) -> None:
        self.measure = measure
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure())


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Polls finely: completion time is what the bench measures."""
    from worker.devtools.soak import wait_for

    wait_for(condition, timeout, what, interval=interval)


# -- backends --------------------------------------------------------------------------------
class Backend:
    """Where the data lives and how a worker runs: databases, worker processes, the client."""

    name = ""
    label = ""

    def fresh_database(self, name: str) -> str:
        raise NotImplementedError

    def clone(self, template_url: str, name: str) -> str:
        raise NotImplementedError

    def drop(self, url: str) -> None:
        raise NotImplementedError

    def start_worker(self, url: str, concurrency: int) -> Any:
        raise NotImplementedError

    def client(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresRedis(Backend):
    name = "postgres"
    label = "PostgreSQL + Redis"

    def __init__(self, database_url: str, broker_url: str, options: Options, directory: Path) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.server = make_url(database_url)
        self.admin = create_engine(self.server.set(database="postgres"), isolation_level="AUTOCOMMIT")
        self.broker_url = str(make_url(broker_url).set(database=str(options.redis_db)))
        self.directory = directory
        import redis

        self.redis = redis.Redis.from_url(self.broker_url)
        self.redis.flushdb()  # the bench's own database (never 0, 13 or 15 by default)
        self._client: Any = None

    def url(self, name: str) -> str:
        return self.server.set(database=name).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        from sqlalchemy import text

        with self.admin.connect() as connection:
            connection.execute(text(sql))

    def fresh_database(self, name: str) -> str:
        from worker.migrate import upgrade

        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        upgrade(self.url(name))
        _dispose()
        return self.url(name)

    def clone(self, template_url: str, name: str) -> str:
        from sqlalchemy.engine import make_url

        _dispose()
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(template_url).database}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        _dispose()
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def start_worker(self, url: str, concurrency: int) -> RedisWorker:
        return RedisWorker(self, url, concurrency)

    def client(self) -> Any:
        from tasks.client import BillingClient

        if self._client is None:
            self._client = BillingClient(broker_url=self.broker_url)
        return self._client

    def drained(self) -> bool:
        pipe = self.redis.pipeline()
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.hlen("unacked")
        lengths: list[int] = pipe.execute()
        return sum(lengths) == 0

    def close(self) -> None:
        self.admin.dispose()
        self.redis.close()


class RedisWorker:
    """A real ``celery worker`` (prefork) started like the soak starts it."""

    def __init__(self, backend: PostgresRedis, url: str, concurrency: int) -> None:
        from worker.devtools.soak import WorkerProcess

        self.backend = backend
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": url,
            "BILLING_BROKER_URL": backend.broker_url,
            "BILLING_LOG_LEVEL": "WARNING",
        }
        self.process = WorkerProcess(
            f"bench{int(time.time() * 1000) % 100_000}",
            env,
            backend.directory,
            concurrency,
            app="worker.devtools.bench_tasks",
            queues=",".join(QUEUES),
        ).start()
        self.client = backend.client()
        for _ in range(concurrency * 4):  # every pool child has imported and run a task
            self.client.app.send_task("billing.bench.noop", queue=QUEUE_ITEMS)
        wait_until(self.drained, 60, "the worker to warm up")

    def drained(self) -> bool:
        return self.backend.drained()

    def rss_mib(self) -> float:
        assert self.process.process is not None
        return tree_rss_mib(self.process.process.pid)

    def stop(self) -> None:
        self.process.stop()


class EmbeddedSqlite(Backend):
    name = "sqlite"
    label = "SQLite, embedded"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        from tasks.client import BillingClient
        from worker.app import app

        self.app = app
        self._client = BillingClient(app=app)

    def url(self, name: str) -> str:
        return f"sqlite:///{self.directory / (name + '.db')}"

    def _path(self, url: str) -> Path:
        return Path(url.removeprefix("sqlite:///"))

    def fresh_database(self, name: str) -> str:
        from worker.migrate import upgrade

        url = self.url(name)
        self.drop(url)
        upgrade(url)
        _dispose()
        return url

    def clone(self, template_url: str, name: str) -> str:
        _dispose()
        url = self.url(name)
        self.drop(url)
        shutil.copyfile(self._path(template_url), self._path(url))
        return url

    def drop(self, url: str) -> None:
        _dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self._path(url)}{suffix}").unlink(missing_ok=True)

    def start_worker(self, url: str, concurrency: int) -> EmbeddedBenchWorker:
        return EmbeddedBenchWorker(self, url)

    def client(self) -> Any:
        return self._client


class EmbeddedBenchWorker:
    """The embedded default's worker: a solo pool in a thread of this process."""

    def __init__(self, backend: EmbeddedSqlite, url: str) -> None:
        import worker.devtools.bench_tasks  # noqa: F401  (registers the baselines)
        from worker.devtools.embedded import EmbeddedWorker

        _use_database(url)
        self.embedded = EmbeddedWorker(backend.app, queues=QUEUES).__enter__()
        backend.client().app.send_task("billing.bench.noop", queue=QUEUE_ITEMS)
        wait_until(self.drained, 60, "the worker to warm up")

    def drained(self) -> bool:
        return self.embedded.in_flight == 0 and self.embedded.queued() == 0

    def rss_mib(self) -> float:
        return tree_rss_mib(os.getpid())

    def stop(self) -> None:
        self.embedded.__exit__(None, None, None)


def _dispose() -> None:
    from worker.db import dispose_engines

    dispose_engines()


def _use_database(url: str) -> None:
    from worker.settings import get_settings

    os.environ["BILLING_DATABASE_URL"] = url
    get_settings.cache_clear()
    _dispose()


# -- data ------------------------------------------------------------------------------------
def _columns(model: Any, **values: Any) -> dict[str, Any]:
    """A full row (column name -> value) of a table, its defaults filled in by the model."""
    from sqlalchemy import inspect

    instance = model(**values)
    return {attr.columns[0].name: getattr(instance, attr.key) for attr in inspect(model).mapper.column_attrs}


def _engine(url: str) -> Any:
    from worker.db import get_engine

    return get_engine(url)


def _customers(
    url: str, count: int, now: int, *, credit: bool, prefix: str = "B"
) -> list[tuple[str, str, int]]:
    """``count`` customers (currencies in turn); with ``credit``, a third get a credit balance
    (ledger row and balance) and a fifth a 10 % coupon. Returns (id, currency, credit)."""
    from sqlalchemy import insert

    from tasks.ids import PREFIXES, new_id
    from worker.db import table_of
    from worker.tables import BalanceTransaction, CouponRow, Customer, CustomerBalance, DiscountRow

    rng = random.Random(count)
    customers, balances, ledger, discounts, out = [], [], [], [], []
    for index in range(count):
        customer_id = new_id(PREFIXES["customer"])
        currency = CURRENCIES[index % len(CURRENCIES)]
        customers.append(
            _columns(
                Customer,
                id=customer_id,
                currency=currency,
                invoice_prefix=f"{prefix}{index:07d}",
                created=now,
            )
        )
        amount = rng.randint(50_000, 500_000) if credit and index % 3 == 0 else 0
        if amount:
            balances.append(
                {"customer_id": customer_id, "currency": currency, "balance": -amount, "transaction_count": 1}
            )
            ledger.append(
                _columns(
                    BalanceTransaction,
                    id=new_id(PREFIXES["customer_balance_transaction"]),
                    customer_id=customer_id,
                    currency=currency,
                    sequence=1,
                    amount=-amount,
                    ending_balance=-amount,
                    type="adjustment",
                    created=now,
                )
            )
        if credit and index % 5 == 0 and prefix == "B":
            discounts.append(
                _columns(
                    DiscountRow,
                    id=new_id(PREFIXES["discount"]),
                    customer_id=customer_id,
                    coupon_id=COUPON,
                    start=now,
                    created=now,
                )
            )
        out.append((customer_id, currency, amount))
    with _engine(url).begin() as connection:
        connection.execute(insert(table_of(Customer)), customers)
        if balances:
            connection.execute(insert(table_of(CustomerBalance)), balances)
            connection.execute(insert(table_of(BalanceTransaction)), ledger)
        if discounts:
            connection.execute(
                insert(table_of(CouponRow)),
                [_columns(CouponRow, id=COUPON, percent_off="10", duration="forever", created=now)],
            )
            connection.execute(insert(table_of(DiscountRow)), discounts)
    return out


ITEM_COLUMNS = (
    "id",
    "customer_id",
    "currency",
    "amount",
    "unit_amount",
    "quantity",
    "discountable",
    "created",
)


def _item_rows(
    customers: list[tuple[str, str, int]], count: int, now: int, seed: int
) -> list[tuple[Any, ...]]:
    """``count`` items, in turn over the customers (each in its customer's currency)."""
    from tasks.ids import PREFIXES, new_id

    rng = random.Random(seed)
    rows = []
    for index in range(count):
        customer_id, currency, _ = customers[index % len(customers)]
        amount = rng.randint(100, 5_000)
        rows.append((new_id(PREFIXES["invoice_item"]), customer_id, currency, amount, amount, 1, True, now))
    return rows


def executemany_items(url: str, rows: list[tuple[Any, ...]], chunk: int = 1_000) -> None:
    """The baseline: a plain Core executemany, one transaction per ``chunk`` rows."""
    from sqlalchemy import insert

    from worker.db import table_of
    from worker.tables import InvoiceItem

    statement = insert(table_of(InvoiceItem))
    with _engine(url).connect() as connection:
        for start in range(0, len(rows), chunk):
            with connection.begin():
                connection.execute(
                    statement, [dict(zip(ITEM_COLUMNS, r, strict=True)) for r in rows[start : start + chunk]]
                )


def copy_items(url: str, rows: list[tuple[Any, ...]], chunk: int = 50_000) -> None:
    """PostgreSQL's fastest path (COPY), for reference and for loading the generation data."""
    raw = _engine(url).raw_connection()
    try:
        for start in range(0, len(rows), chunk):
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY invoice_items ({', '.join(ITEM_COLUMNS)}) FROM STDIN") as copy,
            ):
                for row in rows[start : start + chunk]:
                    copy.write_row(row)
            raw.commit()
    finally:
        raw.close()


def load_items(url: str, rows: list[tuple[Any, ...]]) -> None:
    if url.startswith("postgresql"):
        copy_items(url, rows)
    else:
        executemany_items(url, rows, chunk=50_000)


def _count(url: str, sql: str) -> int:
    from sqlalchemy import text

    with _engine(url).connect() as connection:
        return int(connection.execute(text(sql)).scalar_one())


def _empty_items(url: str) -> None:
    from sqlalchemy import text

    with _engine(url).begin() as connection:
        if url.startswith("postgresql"):
            connection.execute(
                text("TRUNCATE invoice_items, idempotency_keys, events, webhook_deliveries, webhook_attempts")
            )
        else:
            connection.execute(text("DELETE FROM invoice_items"))
            connection.execute(text("DELETE FROM idempotency_keys"))
            connection.execute(text("DELETE FROM webhook_attempts"))
            connection.execute(text("DELETE FROM webhook_deliveries"))
            connection.execute(text("DELETE FROM events"))


def _audit(url: str, results: Results, what: str) -> None:
    from worker.audit import audit_database

    _use_database(url)
    violations = audit_database(events=False)  # the rows seeded by plain INSERTs have no events
    if violations:
        results.violations += len(violations)
        results.notes.append(f"{what}: {len(violations)} audit violations, e.g. {violations[0].as_json()}")


# -- stages ----------------------------------------------------------------------------------
def ingestion(backend: Backend, options: Options, results: Results, echo: Callable[[str], None]) -> None:
    now = int(time.time())
    url = backend.fresh_database(options.database)
    customers = _customers(url, 100, now, credit=False)
    specs = [{"customer": c, "currency": cur} for c, cur, _ in customers]
    worker = backend.start_worker(url, options.concurrency)
    client = backend.client()
    try:
        for run in range(options.runs):
            rows = _item_rows(customers, options.items, now, seed=run)

            _empty_items(url)
            started = time.perf_counter()
            executemany_items(url, rows)
            results.add("ingest.executemany", options.items / (time.perf_counter() - started))

            if backend.name == "postgres":
                _empty_items(url)
                started = time.perf_counter()
                copy_items(url, rows)
                results.add("ingest.copy", options.items / (time.perf_counter() - started))

            _empty_items(url)
            batch = [{**specs[i % len(specs)], "amount": row[3]} for i, row in enumerate(rows)]
            started = time.perf_counter()
            client.create_invoice_items(batch)
            _wait_rows(url, worker, options.items, timeout=600)
            results.add("ingest.list_call", options.items / (time.perf_counter() - started))

            _empty_items(url)
            naive = rows[: options.naive]
            started = time.perf_counter()
            for row in naive:
                client.app.send_task(
                    "billing.bench.naive_item",
                    kwargs=dict(zip(ITEM_COLUMNS, row, strict=True)),
                    queue=QUEUE_ITEMS,
                )
            _wait_rows(url, worker, len(naive), timeout=600)
            results.add("ingest.naive", len(naive) / (time.perf_counter() - started))

            _empty_items(url)
            single = batch[: options.single]
            started = time.perf_counter()
            for spec in single:
                client.create_invoice_item(**spec)
            _wait_rows(url, worker, len(single), timeout=600)
            results.add("single.items", len(single) / (time.perf_counter() - started))

            started = time.perf_counter()
            for _ in range(options.single):
                client.app.send_task("billing.bench.noop", queue=QUEUE_ITEMS)
            wait_until(worker.drained, 600, "the no-op tasks")
            results.add("single.noop", options.single / (time.perf_counter() - started))
            _audit(url, results, f"ingestion run {run + 1}")
            echo(f"bench[{backend.name}]: ingestion run {run + 1}/{options.runs} done")
    finally:
        worker.stop()
        backend.drop(url)


def _wait_rows(url: str, worker: Any, expected: int, timeout: float) -> None:
    def done() -> bool:
        return worker.drained() and _count(url, "SELECT count(*) FROM invoice_items") >= expected

    wait_until(done, timeout, f"{expected} invoice items")
    found = _count(url, "SELECT count(*) FROM invoice_items")
    if found != expected:
        raise AssertionError(f"bench: {found} invoice items stored, {expected} sent")


def bare_generation(url: str, customers: list[tuple[str, str, int]]) -> None:
    """The floor: per customer, one transaction that claims 250 pending items with one
    UPDATE … RETURNING, inserts the invoice, updates its totals and the balance, commits."""
    from sqlalchemy import insert, text

    from tasks.ids import PREFIXES, new_id
    from worker.db import table_of
    from worker.tables import Invoice

    claim = text(
        "UPDATE invoice_items SET invoice_id = :invoice WHERE id IN ("
        " SELECT id FROM invoice_items WHERE customer_id = :customer AND currency = :currency"
        " AND invoice_id IS NULL ORDER BY created, id LIMIT 250) RETURNING amount"
    )
    totals = text(
        "UPDATE invoices SET subtotal = :total, total = :total, total_excluding_tax = :total,"
        " amount_due = :due, amount_remaining = :due, starting_balance = :start, ending_balance = :end,"
        " status = 'open', number = :number, finalized_at = :now WHERE id = :invoice"
    )
    balance = text(
        "UPDATE customer_balances SET balance = balance + :applied"
        " WHERE customer_id = :customer AND currency = :currency"
    )
    add_invoice = insert(table_of(Invoice))
    now = int(time.time())
    with _engine(url).connect() as connection:
        for index, (customer, currency, credit) in enumerate(customers):
            with connection.begin():
                invoice = new_id(PREFIXES["invoice"])
                connection.execute(
                    add_invoice,
                    _columns(Invoice, id=invoice, customer_id=customer, currency=currency, created=now),
                )
                total = sum(
                    connection.execute(
                        claim, {"invoice": invoice, "customer": customer, "currency": currency}
                    ).scalars()
                )
                applied = min(credit, total)
                connection.execute(
                    totals,
                    {"total": total, "due": total - applied, "start": -credit, "end": applied - credit,
                     "number": f"B{index:07d}-0001", "now": now, "invoice": invoice},
                )  # fmt: skip
                connection.execute(balance, {"applied": applied, "customer": customer, "currency": currency})


def generation(backend: Backend, options: Options, results: Results, echo: Callable[[str], None]) -> None:
    for size in options.sizes:
        now = int(time.time())
        template = backend.fresh_database(f"{options.database}_template")
        customers = _customers(template, max(1, size // ITEMS_PER_CUSTOMER), now, credit=True)
        # Invoiced before the clock starts, so that each pool process has compiled its
        # statements and opened its connection: the figure is the steady state.
        warmers = WARM_UP_PER_PROCESS * options.concurrency
        warm_up = _customers(template, warmers, now, credit=True, prefix="W")
        rows = _item_rows(customers, size, now, seed=size) + _item_rows(
            warm_up, 10 * len(warm_up), now, seed=0
        )
        by_customer = sorted(rows, key=lambda r: (r[1], r[0]))
        del rows
        load_items(template, by_customer)
        del by_customer
        _dispose()
        try:
            for run in range(options.runs):
                url = backend.clone(template, f"{options.database}_run")
                started = time.perf_counter()
                bare_generation(url, customers)
                results.add(f"gen.{size}.bare", size / (time.perf_counter() - started))
                backend.drop(url)

                url = backend.clone(template, f"{options.database}_run")
                worker = backend.start_worker(url, options.concurrency)
                try:
                    client = backend.client()
                    for customer, currency, _ in warm_up:
                        client.create_invoice(customer=customer, currency=currency, finalize=True)
                    wait_until(worker.drained, 600, "the warm-up invoices")
                    idle = worker.rss_mib()
                    with PeakSampler(worker.rss_mib) as sampler:
                        started = time.perf_counter()
                        for customer, currency, _ in customers:
                            client.create_invoice(customer=customer, currency=currency, finalize=True)
                        wait_until(
                            _all_invoiced(worker, url),
                            3_600,
                            f"{size} items to be invoiced",
                            interval=0.01,  # Redis first; the database only once drained
                        )
                        elapsed = time.perf_counter() - started
                finally:
                    worker.stop()
                results.add(f"gen.{size}.ours", size / elapsed)
                results.add(f"gen.{size}.us_per_item", elapsed / size * 1e6)
                results.add(f"rss.{size}.idle", idle)
                results.add(f"rss.{size}.peak", sampler.peak)
                invoices = _count(url, "SELECT count(*) FROM invoices WHERE status IN ('open', 'paid')")
                expected = len(customers) + len(warm_up)
                if invoices != expected:
                    results.notes.append(
                        f"generation {size}: {invoices} invoices finalized, {expected} expected"
                    )
                    results.violations += 1
                _audit(url, results, f"generation {size} run {run + 1}")
                backend.drop(url)
                echo(f"bench[{backend.name}]: generation {size} run {run + 1}/{options.runs} done")
        finally:
            backend.drop(template)


def _all_invoiced(worker: RedisWorker | EmbeddedBenchWorker, url: str) -> Callable[[], bool]:
    return lambda: worker.drained() and _generated(url)


def _generated(url: str) -> bool:
    return (
        _count(url, "SELECT count(*) FROM invoice_items WHERE invoice_id IS NULL") == 0
        and _count(url, "SELECT count(*) FROM invoices WHERE status = 'draft'") == 0
    )


def run_backend(name: str, options: Options, echo: Callable[[str], None]) -> Results:
    """One backend, in this process (``billing bench`` runs each in a child process)."""
    from worker.settings import get_settings

    settings = get_settings()
    results = Results(name)
    directory = Path(tempfile.mkdtemp(prefix=f"billing-bench-{name}-"))
    backend: Backend
    if name == "postgres":
        backend = PostgresRedis(settings.database_url, settings.broker_url, options, directory)
    else:
        backend = EmbeddedSqlite(directory)
    try:
        if "ingestion" in options.stages:
            ingestion(backend, options, results, echo)
        if "generation" in options.stages:
            generation(backend, options, results, echo)
    finally:
        backend.close()
        _dispose()
        shutil.rmtree(directory, ignore_errors=True)
    return results


# -- the table -------------------------------------------------------------------------------
def _stat(values: list[float] | None, fmt: str) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, fmt)
    return f"{format(median, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def _ratios(a: list[float] | None, b: list[float] | None) -> list[float] | None:
    if not a or not b:
        return None
    return [x / y for x, y in zip(a, b, strict=False)]


def _check(values: list[float] | None, ok: Callable[[float], bool]) -> str:
    if not values:
        return ""
    return "met" if ok(statistics.median(values)) else "MISSED"


def rows_of(results: Results, sizes: tuple[int, ...]) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) for one backend."""
    f = results.figures
    rows: list[tuple[str, str, str, str]] = [
        ("ingest: list call via broker (items/s)", _stat(f.get("ingest.list_call"), ",.0f"), ">= 20,000",
         _check(f.get("ingest.list_call"), lambda v: v >= 20_000)),
        ("ingest: plain executemany (rows/s)", _stat(f.get("ingest.executemany"), ",.0f"), "", ""),
        ("ingest: COPY (rows/s)", _stat(f.get("ingest.copy"), ",.0f"), "", ""),
        ("ingest: naive task + ORM per item (items/s)", _stat(f.get("ingest.naive"), ",.0f"), "", ""),
    ]  # fmt: skip
    ratio = _ratios(f.get("ingest.list_call"), f.get("ingest.executemany"))
    rows.append(
        ("  list call / executemany", _stat(ratio, ".2f"), ">= 0.5", _check(ratio, lambda v: v >= 0.5))
    )
    ratio = _ratios(f.get("ingest.list_call"), f.get("ingest.naive"))
    rows.append(("  list call / naive", _stat(ratio, ".0f"), ">= 50", _check(ratio, lambda v: v >= 50)))
    rows.append(("single-item messages (items/s)", _stat(f.get("single.items"), ",.0f"), "", ""))
    rows.append(("no-op Celery task (tasks/s)", _stat(f.get("single.noop"), ",.0f"), "", ""))
    ratio = _ratios(f.get("single.items"), f.get("single.noop"))
    rows.append(("  single items / no-op", _stat(ratio, ".2f"), ">= 0.8", _check(ratio, lambda v: v >= 0.8)))
    for size in sizes:
        rows.append(
            (f"generation {size:,}: worker (items/s)", _stat(f.get(f"gen.{size}.ours"), ",.0f"), "", "")
        )
        rows.append(
            (f"generation {size:,}: bare script (items/s)", _stat(f.get(f"gen.{size}.bare"), ",.0f"), "", "")
        )
        ratio = _ratios(f.get(f"gen.{size}.ours"), f.get(f"gen.{size}.bare"))
        rows.append(
            ("  worker / bare script", _stat(ratio, ".2f"), ">= 0.6", _check(ratio, lambda v: v >= 0.6))
        )
        rows.append(("  cost per item (us)", _stat(f.get(f"gen.{size}.us_per_item"), ",.1f"), "", ""))
    if len(sizes) > 1:
        small, large = f.get(f"gen.{sizes[0]}.us_per_item"), f.get(f"gen.{sizes[-1]}.us_per_item")
        ratio = [statistics.median(large) / statistics.median(small)] if small and large else None
        rows.append((f"  cost per item {sizes[-1]:,} / {sizes[0]:,}", _stat(ratio, ".2f"), "0.75-1.25",
                     _check(ratio, lambda v: 0.75 <= v <= 1.25)))  # fmt: skip
    for size in sizes:
        idle, peak = f.get(f"rss.{size}.idle"), f.get(f"rss.{size}.peak")
        growth = [p - i for p, i in zip(peak or [], idle or [], strict=False)] or None
        rows.append((f"worker RSS at {size:,} backlog: idle / peak (MiB)",
                     f"{_stat(idle, '.0f')} / {_stat(peak, '.0f')}", "", ""))  # fmt: skip
        rows.append(
            ("  peak - idle (MiB)", _stat(growth, ".0f"), "<= 100", _check(growth, lambda v: v <= 100))
        )
    rows.append(
        ("audit violations", str(results.violations), "0", "met" if results.violations == 0 else "MISSED")
    )
    return rows


def table(all_results: list[Results], options: Options, header: str) -> str:
    columns = [(r.backend, rows_of(r, options.sizes)) for r in all_results]
    labels = {"postgres": "PostgreSQL + Redis", "sqlite": "SQLite (embedded)"}
    lines = [header, ""]
    head = (
        ["figure (median over runs, min-max)"]
        + [labels[name] for name, _ in columns]
        + ["target", "PostgreSQL"]
    )
    body = []
    for index, (figure, *_) in enumerate(columns[0][1]):
        cells = [figure] + [rows[index][1] for _, rows in columns]
        by_name = dict(columns)
        pg = by_name.get("postgres")
        cells += [pg[index][2] if pg else columns[0][1][index][2], pg[index][3] if pg else ""]
        body.append(cells)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    lines += [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]
    backends = {r.backend: r for r in all_results}
    if "postgres" in backends and "sqlite" in backends:
        worst = _sqlite_vs_postgres(backends["postgres"], backends["sqlite"], options.sizes)
        lines += ["", f"SQLite vs PostgreSQL, throughput: {worst}"]
    for r in all_results:
        lines += [f"note ({r.backend}): {note}" for note in r.notes]
    return "\n".join(lines)


def _sqlite_vs_postgres(pg: Results, lite: Results, sizes: tuple[int, ...]) -> str:
    names = ["ingest.list_call", "single.items", *(f"gen.{s}.ours" for s in sizes)]
    ratios = {
        n: statistics.median(pg.figures[n]) / statistics.median(lite.figures[n])
        for n in names
        if pg.figures.get(n) and lite.figures.get(n)
    }
    if not ratios:
        return "-"
    name, worst = max(ratios.items(), key=lambda kv: kv[1])
    verdict = "met" if worst <= 3 else "MISSED"
    return (
        f"PostgreSQL / SQLite at most {worst:.2f} ({name}); target: SQLite no worse than 3x slower: {verdict}"
    )


def header(options: Options) -> str:
    versions = []
    with contextlib.suppress(Exception):
        import celery
        import sqlalchemy

        versions = [f"Python {platform.python_version()}", f"Celery {celery.__version__}",
                    f"SQLAlchemy {sqlalchemy.__version__}"]  # fmt: skip
    return (
        f"billing bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        + ", ".join(versions)
        + f"; runs={options.runs}, worker concurrency={options.concurrency},"
        f" ingestion {options.items:,} items (naive {options.naive:,}, single {options.single:,})"
    )


# -- entry points ----------------------------------------------------------------------------
def run_bench(options: Options, backends: tuple[str, ...], echo: Callable[[str], None]) -> tuple[int, str]:
    """Each backend in a child process; returns (exit code, the table)."""
    all_results = []
    with tempfile.TemporaryDirectory(prefix="billing-bench-") as directory:
        for name in backends:
            out = Path(directory) / f"{name}.json"
            env = dict(os.environ)
            if name == "sqlite":
                env.pop("BILLING_DATABASE_URL", None)
                env["BILLING_BROKER_URL"] = "memory://localhost/"
            command = [
                sys.executable,
                "-m",
                "worker.devtools.bench",
                name,
                str(out),
                json.dumps(options.__dict__),
            ]
            child = subprocess.Popen(command, env=env)
            try:
                returncode = child.wait()
            except BaseException:  # Ctrl-C: the child stops its workers and drops its databases
                child.terminate()
                child.wait(60)
                raise
            if returncode != 0 or not out.exists():
                echo(f"bench[{name}]: failed (exit {returncode})")
                return 1, ""
            data = json.loads(out.read_text())
            all_results.append(Results(data["backend"], data["figures"], data["notes"], data["violations"]))
    text = table(all_results, options, header(options))
    echo(text)
    return (1 if any(r.violations for r in all_results) else 0), text


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _child(argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, _stop)  # run the finally blocks: workers stopped, databases dropped
    name, out, raw = argv
    values = json.loads(raw)
    values["sizes"] = tuple(values["sizes"])
    values["stages"] = tuple(values["stages"])
    results = run_backend(name, Options(**values), lambda line: print(line, file=sys.stderr, flush=True))
    Path(out).write_text(json.dumps(results.__dict__))


if __name__ == "__main__":
    _child(sys.argv[1:])
