"""A real Celery worker inside this process, for the demo and the tests.

With the default ``memory://`` broker, producer and worker must share a process; this
runs the worker in a thread (solo pool). It works the same against Redis.
``wait_idle`` returns once every queue is empty and no task is received-but-unfinished
(a retry waiting for its countdown counts as unfinished). Messages refused before they
become tasks (not JSON, unknown task) are never "received", so they are not counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from typing import Any

from amqp.exceptions import ChannelError
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun, task_received, task_revoked
from kombu import Connection
from kombu.transport import virtual

from tasks.operations import ALL_QUEUES


def _channel(connection: Connection) -> virtual.Channel:
    """The connection's channel: memory and Redis are both kombu virtual transports, whose
    channels purge and count a queue (kombu's base channel type declares neither)."""
    channel = connection.default_channel
    if not isinstance(channel, virtual.Channel):
        raise TypeError(f"EmbeddedWorker needs the memory or Redis broker, not {type(channel).__name__}")
    return channel


class EmbeddedWorker:
    def __init__(self, app: Celery, *, loglevel: str = "WARNING", queues: Sequence[str] = ALL_QUEUES) -> None:
        self.app = app
        self.loglevel = loglevel
        self.queues = tuple(queues)
        """The queues it consumes and waits on (default: all; the benchmark leaves out documents)."""
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._stack = ExitStack()

    # Counted by task id: a batch task (single-item messages) finishes its messages one by
    # one, and its own run (under an id of its own) must not count.
    def _received(self, request: Any = None, **_: Any) -> None:
        with self._lock:
            self._in_flight[request.id] += 1

    def _finished(self, task_id: str | None = None, request: Any = None, **_: Any) -> None:
        task_id = task_id or (request.id if request is not None else None)
        with self._lock:
            if self._in_flight.get(task_id or "", 0) > 0:
                self._in_flight[task_id or ""] -= 1
                if not self._in_flight[task_id or ""]:
                    del self._in_flight[task_id or ""]

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    def __enter__(self) -> EmbeddedWorker:
        task_received.connect(self._received, weak=False)
        for signal in (task_postrun, task_revoked):
            signal.connect(self._finished, weak=False)
        self.app.loader.import_default_modules()
        self._stack.enter_context(
            start_worker(
                self.app,
                pool="solo",
                perform_ping_check=False,
                loglevel=self.loglevel,
                queues=list(self.queues),
                shutdown_timeout=30,
            )
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._stack.close()
        finally:
            task_received.disconnect(self._received)
            for signal in (task_postrun, task_revoked):
                signal.disconnect(self._finished)

    def purge(self) -> int:
        """Drop every queued message (tests: the memory broker is shared by the whole process)."""
        with self.app.connection_for_write() as connection:
            channel = _channel(connection)
            return sum(channel.queue_purge(name) or 0 for name in self.queues)

    def queued(self) -> int:
        total = 0
        with self.app.connection_for_write() as connection:
            channel = _channel(connection)
            for name in self.queues:
                with suppress(ChannelError):  # Redis drops an empty queue's key: nothing queued there
                    total += channel.queue_declare(queue=name, passive=True).message_count
        return total

    def wait_idle(self, timeout: float = 120.0, *, settle: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            busy = self.in_flight
            if busy == 0 and self.queued() == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= settle:
                    return
            else:
                quiet_since = None
            time.sleep(0.05)
        raise TimeoutError(
            f"worker still busy after {timeout}s ({self.in_flight} in flight, {self.queued()} queued)"
        )
