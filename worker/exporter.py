"""``billing exporter``: the deployment's gauges for Prometheus, read on each scrape.

One exporter serves a whole deployment, however many workers it has (the workers' own port,
``worker.metrics``, serves their task counts). Each scrape reads, within a bounded time
(``BILLING_SCRAPE_TIMEOUT_MS`` per database statement, the same as the Redis socket timeout):

- Redis (the broker): each queue's length (its priority lists too), the unacknowledged messages
  per queue (kombu's ``unacked`` hash; counted per queue up to ``UNACKED_SCAN_LIMIT`` entries,
  the rest under ``queue=""``), the age of the oldest unacknowledged one, how long the message at
  each queue's head has been waiting there (seen by this exporter: it stays at the head only
  while no worker takes from that queue), entries refused and not yet recorded, and each beat
  job's last success (written by the worker that ran it, ``worker.metrics``).
- The database, by statements that read indexes only: open outbox rows and the age of the
  oldest (``ix_outbox_open``); pending invoice items and the age of the oldest, per currency
  (``ix_invoice_items_pending``); dead letters by status and the parked ones
  (``ix_task_failures_status_code``); invoices finalized and their lines, counted from the
  exporter's start by reading those finalized in the last few minutes
  (``ix_invoices_finalized_at``).

A source that cannot be read (down, too slow) is reported by ``billing_exporter_up{source}`` = 0
and its gauges are left out of that scrape, never faked. README: Operations.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from tasks.broker import REFUSED_KEY
from tasks.operations import ALL_QUEUES, OPERATIONS
from worker.db import get_engine
from worker.metrics import BEAT_LAST_SUCCESS_KEY
from worker.settings import Settings

log = logging.getLogger("billing.exporter")

PRIORITY_STEPS = (0, 3, 6, 9)
"""kombu's Redis priority lists: ``queue`` itself, then ``queue\\x06\\x16<n>``."""
PRIORITY_SEP = "\x06\x16"
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"
UNACKED_SCAN_LIMIT = 10_000
_ROUTING_KEY = re.compile(rb',\s*"([^"\\]*)"\s*\]\s*$')

BEAT_JOBS = tuple(name for name, operation in OPERATIONS.items() if operation.kind in ("job", "sweep"))


def _queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def _delivery_tag(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        tag = json.loads(raw)["properties"]["delivery_tag"]
    except Exception:  # not a kombu message: the transport will refuse it
        return raw[:64].hex()
    return str(tag)


class BillingCollector(Collector):
    def __init__(self, settings: Settings, *, now: Any = time.time) -> None:
        self.settings = settings
        self.now = now
        self._lock = threading.Lock()
        self._heads: dict[str, tuple[str, float]] = {}
        """queue -> (delivery tag at its head, when this exporter first saw it there)."""
        self._redis: Any = None
        self._window = settings.task_time_limit_s + 60
        self._seen: dict[str, int] | None = None
        """Invoices counted already (id -> finalized_at); None until the first scrape primed it."""
        self._invoices: dict[str, float] = {}
        self._lines: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            up = GaugeMetricFamily(
                "billing_exporter_up", "1 when the source was read in this scrape", labels=["source"]
            )
            took = GaugeMetricFamily(
                "billing_exporter_scrape_seconds", "How long reading the source took", labels=["source"]
            )
            for source, read in (("redis", self._broker), ("database", self._database)):
                started = time.monotonic()
                try:
                    families = list(read())
                except Exception as exc:
                    log.warning("scrape of %s failed: %s: %s", source, type(exc).__name__, exc)
                    families, ok = [], 0.0
                else:
                    ok = 1.0
                yield from families
                up.add_metric([source], ok)
                took.add_metric([source], time.monotonic() - started)
            yield up
            yield took

    # -- Redis ---------------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._redis is None:
            import redis

            timeout = self.settings.scrape_timeout_ms / 1000
            self._redis = redis.Redis.from_url(
                self.settings.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return self._redis

    def _broker(self) -> Iterator[Metric]:
        if not self.settings.broker_url.startswith(("redis://", "rediss://")):
            raise RuntimeError(f"not a Redis broker: {self.settings.broker_url.split('://')[0]}://")
        client, now = self._client(), self.now()
        pipe = client.pipeline(transaction=False)
        for queue in ALL_QUEUES:
            for key in _queue_keys(queue):
                pipe.llen(key)
            pipe.lindex(queue, -1)
        pipe.hlen(UNACKED_KEY)
        pipe.zrange(UNACKED_INDEX_KEY, 0, 0, withscores=True)
        pipe.llen(REFUSED_KEY)
        pipe.hgetall(BEAT_LAST_SUCCESS_KEY)
        replies = pipe.execute()

        depth = GaugeMetricFamily("billing_queue_messages", "Messages waiting in the queue", labels=["queue"])
        head = GaugeMetricFamily(
            "billing_queue_head_wait_seconds",
            "How long the message at the head of the queue has been there (as this exporter saw it);"
            " 0 when the queue is empty",
            labels=["queue"],
        )
        at = 0
        for queue in ALL_QUEUES:
            lengths = replies[at : at + len(PRIORITY_STEPS)]
            tag = _delivery_tag(replies[at + len(PRIORITY_STEPS)])
            at += len(PRIORITY_STEPS) + 1
            depth.add_metric([queue], float(sum(lengths)))
            if tag is None:
                self._heads.pop(queue, None)
                head.add_metric([queue], 0.0)
                continue
            seen_tag, since = self._heads.get(queue, (None, now))
            if seen_tag != tag:
                since = now
                self._heads[queue] = (tag, now)
            head.add_metric([queue], max(0.0, now - since))
        unacked_total, oldest, refused, beats = replies[at:]
        yield depth
        yield head
        yield self._unacked(client, int(unacked_total))
        yield GaugeMetricFamily(
            "billing_unacked_oldest_age_seconds",
            "Age of the oldest message taken by a worker and not yet acknowledged (0: none)",
            value=max(0.0, now - float(oldest[0][1])) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "billing_refused_entries_waiting",
            "Refused entries not yet recorded in task_failures (a worker records them within 30 s)",
            value=float(refused),
        )
        last = GaugeMetricFamily(
            "billing_beat_last_success_timestamp_seconds",
            "Unix time of the beat job's last success (absent: never, or before Redis was emptied)",
            labels=["job"],
        )
        for name, stamp in sorted(beats.items()):
            last.add_metric([name.decode()], float(stamp))
        yield last

    def _unacked(self, client: Any, total: int) -> Metric:
        family = GaugeMetricFamily(
            "billing_queue_unacked_messages",
            "Messages taken by a worker and not yet acknowledged, by the queue they came from",
            labels=["queue"],
        )
        counts: dict[str, int] = {}
        scanned = 0
        if total <= UNACKED_SCAN_LIMIT:
            for _, raw in client.hscan_iter(UNACKED_KEY, count=1000):
                scanned += 1
                # [message, exchange, routing_key]: the routing key (the queue) read off the tail,
                # without decoding the message (an items batch is some 200 KB)
                match = _ROUTING_KEY.search(raw[-300:])
                queue = match.group(1).decode(errors="replace") if match else ""
                counts[queue] = counts.get(queue, 0) + 1
        for queue in ALL_QUEUES:
            family.add_metric([queue], float(counts.pop(queue, 0)))
        family.add_metric([""], float(sum(counts.values()) + max(0, total - scanned)))
        return family

    # -- the database --------------------------------------------------------------------------
    def _database(self) -> Iterator[Metric]:
        now = self.now()
        engine = get_engine(self.settings.database_url)
        with engine.connect() as connection, connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(
                    text(f"SET LOCAL statement_timeout = {int(self.settings.scrape_timeout_ms)}")
                )
            outbox = connection.execute(
                text("SELECT count(*), min(created) FROM outbox WHERE done_at IS NULL")
            ).one()
            pending = connection.execute(
                text(
                    "SELECT currency, count(*), min(created) FROM invoice_items"
                    " WHERE invoice_id IS NULL GROUP BY currency"
                )
            ).all()
            failures = connection.execute(
                text(
                    "SELECT status, error_code = 'message_parked', count(*) FROM task_failures"
                    " GROUP BY status, error_code = 'message_parked'"
                )
            ).all()
            self._count_finalized(connection, int(now))

        yield GaugeMetricFamily(
            "billing_outbox_open_rows", "Follow-ups written and not yet done", value=float(outbox[0])
        )
        yield GaugeMetricFamily(
            "billing_outbox_oldest_open_age_seconds",
            "Age of the oldest follow-up not yet done (0: none)",
            value=max(0.0, now - outbox[1]) if outbox[1] is not None else 0.0,
        )
        items = GaugeMetricFamily(
            "billing_pending_invoice_items", "Invoice items on no invoice yet", labels=["currency"]
        )
        ages = GaugeMetricFamily(
            "billing_pending_invoice_items_oldest_age_seconds",
            "Age of the oldest invoice item on no invoice yet",
            labels=["currency"],
        )
        for currency, count, oldest in pending:
            items.add_metric([currency], float(count))
            ages.add_metric([currency], max(0.0, now - oldest))
        yield items
        yield ages
        dead = GaugeMetricFamily(
            "billing_task_failures", "Dead letters (task_failures) by status", labels=["status"]
        )
        by_status: dict[str, float] = {"open": 0.0, "retried": 0.0, "resolved": 0.0}
        parked = 0.0
        for status, is_parked, count in failures:
            by_status[status] = by_status.get(status, 0.0) + count
            if is_parked and status == "open":
                parked += count
        for status, count in by_status.items():
            dead.add_metric([status], count)
        yield dead
        yield GaugeMetricFamily(
            "billing_parked_messages",
            "Open dead letters of parked messages (redelivered too often without finishing)",
            value=parked,
        )
        invoices = CounterMetricFamily(
            "billing_invoices_finalized",
            "Invoices finalized since this exporter started, by currency",
            labels=["currency"],
        )
        lines = CounterMetricFamily(
            "billing_invoice_lines_finalized",
            "Lines (invoice items) of the invoices finalized since this exporter started, by currency",
            labels=["currency"],
        )
        for currency in sorted(self._invoices):
            invoices.add_metric([currency], self._invoices[currency])
            lines.add_metric([currency], self._lines.get(currency, 0.0))
        yield invoices
        yield lines

    def _count_finalized(self, connection: Any, now: int) -> None:
        """Count the invoices finalized since the last scrape, exactly once each: re-read those
        finalized within the last ``task_time_limit_s + 60`` s (a transaction stamps its start
        time, and commits within the task's time limit), skip those counted already."""
        since = now - self._window
        rows = connection.execute(
            text("SELECT id, currency, finalized_at FROM invoices WHERE finalized_at >= :since"),
            {"since": since},
        ).all()
        priming = self._seen is None
        seen = self._seen if self._seen is not None else {}
        fresh = [(id_, currency) for id_, currency, _ in rows if id_ not in seen]
        lines: dict[str, int] = {}
        currency_of = dict(fresh)
        ids = [] if priming else list(currency_of)
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            marks = ", ".join(f":i{n}" for n in range(len(chunk)))
            counts = connection.execute(
                text(
                    f"SELECT invoice_id, count(*) FROM invoice_items WHERE invoice_id IN ({marks})"
                    " GROUP BY invoice_id"
                ),
                {f"i{n}": id_ for n, id_ in enumerate(chunk)},
            ).all()
            for invoice_id, count in counts:
                lines[currency_of[invoice_id]] = lines.get(currency_of[invoice_id], 0) + count
        # read in full: now count them, once
        for _, currency in fresh:
            self._invoices[currency] = self._invoices.get(currency, 0.0) + (0 if priming else 1)
            self._lines[currency] = self._lines.get(currency, 0.0) + lines.pop(currency, 0)
        for id_, _, finalized_at in rows:
            seen[id_] = finalized_at
        for id_ in [id_ for id_, at in seen.items() if at < since]:
            del seen[id_]
        self._seen = seen


def serve(settings: Settings, port: int, address: str) -> Any:
    """Start serving ``/metrics`` (a thread); returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(BillingCollector(settings))
    server, _ = start_http_server(port, addr=address, registry=registry)
    return server
