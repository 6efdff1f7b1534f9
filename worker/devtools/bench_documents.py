"""Document rendering throughput and memory: ``python -m worker.devtools.bench_documents``.

In one process (the default): renders every finalized invoice and credit note of the database
named by ``BILLING_DATABASE_URL`` (``billing demo`` makes 11, one of 250 lines) ``--rounds``
times, without storing anything, and prints documents per second and the process's resident
memory (peak, and its growth over the rounds: bounded memory means no growth per document).

``--drain N``: a deep documents queue drained by a real document worker, as deployed
(``-Q billing.documents --max-memory-per-child=400000``). PostgreSQL + Redis from the settings,
in databases of its own: Redis ``--redis-db`` (flushed), and a fresh PostgreSQL database
(``--database``, dropped at the end) that gets N finalized invoices of ``--lines``
lines each, made by the services, and their N document requests are published from the outbox
onto the queue at once; then the worker drains it for at most ``--minutes``, sampled every two
seconds: documents stored, queue depth, the resident memory of each pool process and of the
whole worker, and how many pool processes it went through (each past 400 MB is replaced).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from sqlmodel import col, select

from worker.db import read_session
from worker.documents import render
from worker.documents.model import load
from worker.tables import CreditNote, Invoice


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--drain", type=int, default=0, metavar="N", help="documents queued for a worker")
    parser.add_argument("--lines", type=int, default=3, help="--drain: lines per invoice")
    parser.add_argument("--concurrency", type=int, default=1, help="--drain: pool processes")
    parser.add_argument("--minutes", type=float, default=30.0, help="--drain: stop after this long")
    parser.add_argument("--database", default="billing_bench_documents", help="--drain: PostgreSQL db name")
    parser.add_argument("--redis-db", type=int, default=11, help="--drain: Redis database, flushed first")
    options = parser.parse_args()
    if options.drain:
        drain(options)
        return
    with read_session() as session:
        ids = list(session.exec(select(Invoice.id).where(col(Invoice.number).is_not(None))))
        ids += list(session.exec(select(CreditNote.id)))
        sources = [load(session, object_id) for object_id in ids]
    render(sources[0])  # warm-up: fonts, templates
    after_warm_up = _rss_mib()
    rendered, started = 0, time.perf_counter()
    sizes = []
    for _ in range(options.rounds):
        for source in sources:
            began = time.perf_counter()
            pdf = render(source).pdf
            sizes.append((len(source.lines), time.perf_counter() - began, len(pdf)))
            rendered += 1
    elapsed = time.perf_counter() - started
    largest = max(sizes)
    rate = rendered / elapsed
    print(f"documents rendered: {rendered} in {elapsed:.1f} s = {rate:.2f} documents/s (one process)")
    print(f"largest: {largest[0]} lines, {largest[1]:.2f} s, {largest[2] / 1024:.0f} KiB")
    small = [s[1] for s in sizes if s[0] <= 10]
    if small:
        print(f"up to 10 lines: median {sorted(small)[len(small) // 2] * 1000:.0f} ms per document")
    print(f"RSS after warm-up {after_warm_up:.0f} MiB, at the end {_rss_mib():.0f} MiB,"
          f" peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


def drain(options: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from sqlalchemy import create_engine, func, text
    from sqlalchemy.engine import make_url

    from tasks.client import BillingClient
    from tasks.ids import PREFIXES, new_id
    from tasks.operations import QUEUE_DOCUMENTS
    from worker.db import dispose_engines
    from worker.devtools.bench import _rss_kib, _tree
    from worker.devtools.soak import WorkerProcess
    from worker.migrate import upgrade
    from worker.outbox import mark_published
    from worker.services.documents import RENDER_TASK
    from worker.services.registry import run
    from worker.settings import get_settings
    from worker.tables import Document, OutboxMessage

    settings = get_settings()
    server = make_url(settings.database_url)
    if server.get_backend_name() != "postgresql" or not settings.broker_url.startswith("redis"):
        raise SystemExit("--drain needs BILLING_DATABASE_URL on PostgreSQL and BILLING_BROKER_URL on Redis")
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{options.database}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{options.database}"'))
    url = server.set(database=options.database).render_as_string(hide_password=False)
    os.environ["BILLING_DATABASE_URL"] = url
    get_settings.cache_clear()
    upgrade(url)
    dispose_engines()
    import redis

    broker_url = make_url(settings.broker_url).set(database=str(options.redis_db)).render_as_string(False)
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()  # the benchmark's own database (11 by default), as billing bench does
    client = BillingClient(broker_url=broker_url)
    try:
        began = time.perf_counter()
        for n in range(options.drain):  # one customer per invoice: each claims its own lines
            customer = run(
                "billing.customers.create",
                {
                    "id": new_id(PREFIXES["customer"]),
                    "idempotency_key": f"drain-customer-{n}",
                    "name": f"Customer {n}",
                    "currency": "eur",
                },
            ).id
            items = [
                {
                    "id": new_id("ii"),
                    "idempotency_key": f"drain-item-{n}-{k}",
                    "customer": customer,
                    "currency": "eur",
                    "amount": 1000 + k,
                    "description": f"Service {k}",
                }
                for k in range(options.lines)
            ]
            run("billing.invoice_items.create_many", {"items": items, "idempotency_key": f"drain-items-{n}"})
            run(
                "billing.invoices.create",
                {
                    "id": new_id(PREFIXES["invoice"]),
                    "customer": customer,
                    "idempotency_key": f"drain-invoice-{n}",
                    "finalize": True,
                },
            )
        with read_session() as session:
            requests = list(
                session.exec(
                    select(OutboxMessage).where(
                        col(OutboxMessage.task_name) == RENDER_TASK, col(OutboxMessage.done_at).is_(None)
                    )
                )
            )
        for row in requests:
            client.app.send_task(
                row.task_name, kwargs=row.payload, queue=QUEUE_DOCUMENTS, task_id=row.task_id
            )
        mark_published([row.key for row in requests])
        print(
            f"seeded {len(requests)} invoices of {options.lines} lines and queued their documents"
            f" in {time.perf_counter() - began:.0f} s; queue depth {broker.llen(QUEUE_DOCUMENTS)}"
        )

        with tempfile.TemporaryDirectory() as directory:
            env = {
                **os.environ,
                "BILLING_DATABASE_URL": url,
                "BILLING_BROKER_URL": broker_url,
                "BILLING_LOG_LEVEL": "WARNING",
            }
            worker = WorkerProcess(
                "documents",
                env,
                Path(directory),
                options.concurrency,
                queues=QUEUE_DOCUMENTS,
                extra_args=("--max-memory-per-child=400000",),
            )
            started = time.perf_counter()
            worker.start()
            assert worker.process is not None
            children: set[int] = set()
            peak_child = peak_tree = 0.0
            samples: list[tuple[float, int, int, float]] = []
            count = select(func.count()).select_from(Document)
            try:
                while time.perf_counter() - started < options.minutes * 60:
                    time.sleep(2)
                    pids = _tree(worker.process.pid)
                    children.update(pids[1:])
                    child = max((_rss_kib(pid) for pid in pids[1:]), default=0) / 1024
                    tree = sum(_rss_kib(pid) for pid in pids) / 1024
                    peak_child, peak_tree = max(peak_child, child), max(peak_tree, tree)
                    with read_session() as session:
                        stored = int(session.exec(count).one())
                    depth = int(broker.llen(QUEUE_DOCUMENTS))
                    samples.append((time.perf_counter() - started, stored, depth, tree))
                    if stored >= len(requests):
                        break
            finally:
                worker.stop()
        elapsed, stored = samples[-1][0], samples[-1][1]
        tail = [s for s in samples if s[0] >= elapsed / 2] or samples
        rate = (tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1e-9)
        print(
            f"documents stored: {stored} of {len(requests)} in {elapsed:.0f} s"
            f" ({'drained' if stored >= len(requests) else 'stopped at --minutes'}); queue depth at the"
            f" end {samples[-1][2]}"
        )
        print(
            f"rate: {stored / elapsed:.2f} documents/s overall, {rate:.2f} in the second half"
            f" ({options.concurrency} pool process(es), start-up included)"
        )
        print(
            f"resident memory: pool process peak {peak_child:.0f} MiB, whole worker {peak_tree:.0f} MiB;"
            f" {len(children)} pool process(es) used (each past 400 MB is replaced)"
        )
        quarter = max(len(samples) // 4, 1)
        print(
            "worker RSS by quarter (MiB): "
            + ", ".join(
                f"{max(s[3] for s in samples[i : i + quarter]):.0f}" for i in range(0, len(samples), quarter)
            )
        )
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{options.database}" WITH (FORCE)'))
        admin.dispose()
        broker.flushdb()


if __name__ == "__main__":
    main()
