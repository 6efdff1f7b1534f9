"""A task killed at its hard time limit is recorded, never dropped.

At ``task_soft_time_limit`` the task itself is interrupted (``SoftTimeLimitExceeded``) and
``BillingTask.perform`` records it like any failure. A task that ignores that (stuck in C
code, a blocked socket) is killed at ``task_time_limit``; Celery then marks it failed in
the worker's main process and, with late acknowledgement, acknowledges the message: the
task's own code never runs again to record anything. ``BillingRequest`` records it there,
with its payload, before the acknowledgement; if even that fails (the database is down),
the message is left unacknowledged, so the broker hands it out again after the visibility
timeout (counted towards parking) rather than losing it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request
from celery.worker.state import task_ready

from worker.failures import record_failure

log = logging.getLogger("billing.tasks")


class BillingRequest(Request):
    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft:
            super().on_timeout(soft, timeout)
            return
        error = TimeLimitExceeded(f"killed at the hard time limit ({timeout} s)")
        try:
            record_failure(
                task_id=self.id, task_name=self.name, payload=self._payload_of(), error=error, retryable=True
            )
        except Exception:
            log.exception(
                "%s [%s]: hard time limit; could not record it: left unacknowledged", self.name, self.id
            )
            task_ready(self)
            return
        super().on_timeout(soft, timeout)

    def _payload_of(self) -> Any:
        args: Any = self.args
        kwargs: Any = self.kwargs
        return {**kwargs, "__args__": list(args)} if args else kwargs
