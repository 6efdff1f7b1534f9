"""Real worker processes for the fault tests: start, kill, restart; the test is the supervisor."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it), for a private server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A private redis-server with an append-only file, so a kill -9 keeps what was queued."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
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


class Unavailable(Exception):
    """A private server cannot be started here (no binaries): skip locally, fail under CI."""


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: BILLING_TEST_POSTGRES_BINDIR, PATH, or Debian's layout."""
    candidates = [os.environ.get("BILLING_TEST_POSTGRES_BINDIR", "")]
    on_path = shutil.which("pg_ctl")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl): set BILLING_TEST_POSTGRES_BINDIR")


def _version(bindir: str) -> int:
    name = Path(bindir).parent.name
    return int(name) if name.isdigit() else 0


class PostgresServer:
    """A private PostgreSQL cluster (initdb + pg_ctl) in a temporary directory on a free port,
    for the tests that restart it: the server named by BILLING_TEST_POSTGRES_URL is never
    touched. PostgreSQL refuses to run as root; as root, the cluster runs as the unprivileged
    OS user BILLING_TEST_POSTGRES_OS_USER (default ``postgres``, else ``nobody``)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="billing-test-postgres-"))
        self.data = self.directory / "data"
        self.user = _server_user()
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        as_user: dict[str, Any] = {}
        if self.user is not None:
            as_user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], cwd=self.directory, capture_output=True, text=True,
            env={**os.environ, "LC_ALL": "C"}, check=False, **as_user,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.directory / "server.log")  # not pg_ctl's output: its pipe would never close
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        return self

    def restart(self) -> None:
        """Fast shutdown (every session's connection is cut, open transactions roll back), then start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("BILLING_TEST_POSTGRES_OS_USER"), "postgres", "nobody"):
        if name:
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
    raise Unavailable("running as root and no unprivileged OS user to run PostgreSQL as")


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
