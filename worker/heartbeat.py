"""A heartbeat file for liveness probes: cheap, and blind to the broker.

The worker's main process touches ``BILLING_HEARTBEAT_FILE`` from its consumer's timer, so
the file goes stale when the event loop that takes messages is stuck; beat touches it at
every tick of its scheduler. A probe compares the file's age with a maximum (``billing
health --heartbeat FILE --max-age S``, or ``find FILE -mmin -N``): no broker round trip,
so a Redis blip restarts nothing (README: Running it for real).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.beat import PersistentScheduler

from worker.settings import get_settings

log = logging.getLogger("billing.heartbeat")


def touch(path: str) -> None:
    try:
        Path(path).touch()
    except OSError as exc:  # a full or read-only disk must not stop the worker; the probe will tell
        log.warning("heartbeat file %s: %s", path, exc)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A consumer bootstep: touches the heartbeat file on the consumer's timer."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.timer_entry: Any = None
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        settings = get_settings()
        if not settings.heartbeat_file:
            return
        touch(settings.heartbeat_file)
        self.timer_entry = parent.timer.call_repeatedly(
            settings.heartbeat_interval_s, touch, (settings.heartbeat_file,)
        )

    def stop(self, parent: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


class HeartbeatScheduler(PersistentScheduler):
    """Beat's scheduler, touching the heartbeat file at every tick. Beat ticks at least every
    ``beat_max_loop_interval`` seconds, which the app sets to the heartbeat interval."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        heartbeat_file = get_settings().heartbeat_file
        if heartbeat_file:
            touch(heartbeat_file)
        interval: float = super().tick(*args, **kwargs)
        return interval
