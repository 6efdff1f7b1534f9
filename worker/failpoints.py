"""Named failpoints: crash or fail at an exact moment, for the fault tests.

``BILLING_FAILPOINTS`` holds a comma-separated list of ``[task@]point=action[:once]``:

- points: ``task_start``, ``before_commit`` (the operation's transaction is about to
  commit), ``after_commit`` (it has committed; nothing acknowledged or published yet),
  ``before_publish`` (follow-ups are in the outbox, not yet sent); for webhook deliveries,
  ``after_claim`` (the try is claimed, nothing sent) and ``after_send`` (the receiver has
  answered, the answer is not recorded);
- actions: ``raise`` (a ``FailpointError``), ``kill_child`` (SIGKILL this process: a
  prefork pool child dies as if OOM-killed), ``kill_worker`` (SIGKILL the worker's main
  process, then this one), ``sleep<seconds>`` (e.g. ``sleep5``, a slow task),
  ``hang<seconds>`` (sleeps through the soft time limit, as code stuck in C would);
- ``:once`` fires the first time only, across processes and restarts (a marker file in
  ``BILLING_FAILPOINT_DIR``), so the redelivered message can then succeed.

With the variable unset this is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time
from functools import lru_cache
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded


class FailpointError(RuntimeError):
    pass


worker_main_pid: int | None = None
"""Set when a Celery worker starts (``worker.app``); ``kill_worker`` kills that process."""


@lru_cache(maxsize=1)
def _configured(spec: str) -> dict[tuple[str | None, str], tuple[str, bool]]:
    points: dict[tuple[str | None, str], tuple[str, bool]] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        where, _, action = entry.partition("=")
        task, _, point = where.rpartition("@")
        action, _, once = action.partition(":")
        points[(task or None, point)] = (action, once == "once")
    return points


def failpoint(point: str, task_name: str | None = None) -> None:
    spec = os.environ.get("BILLING_FAILPOINTS")
    if not spec:
        return
    points = _configured(spec)
    hit = points.get((task_name, point)) or points.get((None, point))
    if hit is None:
        return
    action, once = hit
    if once:
        marker = Path(os.environ.get("BILLING_FAILPOINT_DIR", ".")) / f"failpoint-{task_name}-{point}.fired"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
    if action == "raise":
        raise FailpointError(f"failpoint {point} in {task_name}")
    if action == "kill_child":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "kill_worker":
        if worker_main_pid and worker_main_pid != os.getpid():
            os.kill(worker_main_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep"):
        time.sleep(float(action.removeprefix("sleep")))
    if action.startswith("hang"):
        deadline = time.monotonic() + float(action.removeprefix("hang"))
        while (left := deadline - time.monotonic()) > 0:
            try:
                time.sleep(left)
            except SoftTimeLimitExceeded:
                continue
