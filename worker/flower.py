"""``billing flower``: Flower on the worker app, locked.

Flower asks for authentication on its pages, not on ``/metrics`` (its Prometheus endpoint, which
names every task and worker). This starts Flower (``celery -A worker.app flower``, any of
Flower's options after it) with ``/metrics`` behind the same authentication, and refuses to
start with none: basic auth (``FLOWER_BASIC_AUTH=user:password``, or ``--basic-auth``) or OAuth
(``FLOWER_AUTH`` with ``FLOWER_AUTH_PROVIDER``, or ``--auth``: Flower's documentation). Flower
needs the broker URL only (``BILLING_BROKER_URL``), never the database's. README: Operations.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

AUTH_VARIABLES = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")
AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth")


class NoAuthentication(SystemExit):
    pass


def authenticated(argv: Sequence[str]) -> bool:
    if any(os.environ.get(name, "").strip() for name in AUTH_VARIABLES):
        return True
    return any(arg.split("=", 1)[0] in AUTH_OPTIONS for arg in argv)


def lock_metrics() -> None:
    """Put Flower's ``/metrics`` behind the authentication its other pages have."""
    import tornado.web
    from flower.views import monitor

    get = monitor.Metrics.get
    if not getattr(get, "_billing_locked", False):
        locked = tornado.web.authenticated(get)
        locked._billing_locked = True  # type: ignore[attr-defined]  # a marker on the wrapper
        monitor.Metrics.get = locked


def main(argv: Sequence[str]) -> None:
    if not authenticated(argv):
        raise NoAuthentication(
            "billing flower: no authentication: set FLOWER_BASIC_AUTH=user:password (or FLOWER_AUTH"
            " and FLOWER_AUTH_PROVIDER for OAuth); Flower shows every task and can revoke them"
        )
    lock_metrics()
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", "-A", "worker.app", "flower", *argv]
    celery_main()
