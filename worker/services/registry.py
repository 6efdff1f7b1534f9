"""Task name -> service, resolved from the one table of operations (``tasks.operations``).

Task ``billing.<resource>.<verb>`` runs ``worker/services/<resource>.py``'s ``<verb>``; an
operation whose messages a worker takes together also has ``<verb>_together``. Resolved
once, at import: a row without its service fails the worker's start, not a message.

``run`` validates a payload with the operation's contract and executes its service in
one transaction, as the worker does for a message of that task name (tests use it too).
"""

from __future__ import annotations

import importlib
from typing import Any

from tasks.contracts import Contract, parse
from tasks.operations import OPERATIONS, Operation, contract_of
from worker.services.base import Outcome, Service, TogetherService, execute, execute_together


def _service(operation: Operation, suffix: str = "") -> Any:
    module = importlib.import_module(f"worker.services.{operation.resource}")
    name = operation.verb + suffix
    service = getattr(module, name, None)
    if not callable(service):
        raise LookupError(f"{operation.name}: no service {module.__name__}.{name}")
    return service


SERVICES: dict[str, Any] = {name: _service(op) for name, op in OPERATIONS.items()}
"""Every operation's service: requests take ``(Request, command)``; beat jobs see
``worker.services.maintenance``."""

TOGETHER: dict[str, TogetherService] = {
    name: _service(op, "_together") for name, op in OPERATIONS.items() if op.batching
}
"""Operations whose messages a worker may take together (see ``run_together``)."""


def run(name: str, payload: dict[str, Any], *, redeliveries: int = 0, redelivery_cap: int = 0) -> Outcome:
    command = parse(contract_of(name), payload)
    service: Service = SERVICES[name]
    return execute(name, command, service, redeliveries=redeliveries, redelivery_cap=redelivery_cap)


def run_together(name: str, commands: list[Contract]) -> list[Outcome | None]:
    """Parsed commands of one operation in one transaction; per command, its outcome if it
    is settled, else None (those must run alone with ``run``)."""
    return execute_together(name, commands, TOGETHER[name])
