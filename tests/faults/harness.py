"""Real worker processes for the fault tests: start, kill, restart; the test is the supervisor."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from worker.devtools.soak import WorkerProcess, wait_for


class Cluster:
    """Workers sharing one database and one broker, with failpoints set per worker."""

    def __init__(self, database_url: str, broker_url: str, tmp_path: Path, **settings: Any) -> None:
        self.tmp_path = tmp_path
        self.base_env = {
            **os.environ,
            "BILLING_DATABASE_URL": database_url,
            "BILLING_BROKER_URL": broker_url,
            "BILLING_FAILPOINT_DIR": str(tmp_path),
            **{f"BILLING_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.workers: list[WorkerProcess] = []

    def spawn(self, name: str = "w", *, concurrency: int = 1, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            f"{name}{len(self.workers)}", {**self.base_env, **env}, self.tmp_path, concurrency
        )
        self.workers.append(worker)
        return worker.start()

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log()[-4000:]}" for w in self.workers)


class RedisServer:
    """A private redis-server with an append-only file, so a kill -9 keeps what was queued."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), 10, "redis to start")
        return self

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


class BeatProcess:
    """``celery -A worker.app beat`` with its own schedule file."""

    def __init__(self, env: dict[str, str], directory: Path, name: str) -> None:
        self.log_path = directory / f"{name}.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel=INFO",
             "-s", str(directory / f"{name}-schedule")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
