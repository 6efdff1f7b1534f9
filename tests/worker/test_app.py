"""The worker's app is built from the one table of operations (tasks/operations.py)."""

from __future__ import annotations

import importlib
import logging

import pytest
from celery import Celery

from tasks.operations import ALL_QUEUES, OPERATIONS, Batching, Operation, queue_for
from worker.app import app, beat_schedule
from worker.logs import configure
from worker.services import registry
from worker.tasks import BillingBatchTask, BillingTask, register


def test_every_operation_is_a_task_of_its_name_and_nothing_else_is() -> None:
    billing_tasks = {name for name in app.tasks if name.startswith("billing.")}
    assert billing_tasks == set(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_each_task_is_built_as_its_row_says(name: str) -> None:
    operation, task = OPERATIONS[name], app.tasks[name]
    assert isinstance(task, BillingTask)
    assert isinstance(task, BillingBatchTask) == (operation.batching is not None)
    if operation.batching:
        assert (task.batch_size, task.batch_interval) == (
            operation.batching.size,
            operation.batching.interval,
        )
    service, module = (
        registry.SERVICES[name],
        importlib.import_module(f"worker.services.{operation.resource}"),
    )
    assert getattr(module, operation.verb) is service and service.__name__ == operation.verb


def test_the_queues_are_declared_once_and_every_row_uses_one() -> None:
    assert [queue.name for queue in app.conf.task_queues] == list(ALL_QUEUES)
    assert {operation.queue for operation in OPERATIONS.values()} == set(ALL_QUEUES)
    assert app.amqp.router.route({}, "billing.invoices.create")["queue"].name == "billing.invoices"
    assert queue_for("billing.bench.noop") == "billing.default"  # outside the table: the default


def test_beat_jobs_are_operations_on_the_recurring_queue() -> None:
    for entry in beat_schedule(30).values():
        operation = OPERATIONS[entry["task"]]
        assert operation.kind in ("job", "sweep") and operation.queue == "billing.recurring"


def test_a_row_without_its_service_fails_at_registration_not_at_a_message() -> None:
    missing = Operation("billing.invoices.teleport", None, kind="job")
    with pytest.raises(
        LookupError, match=r"billing.invoices.teleport: no service worker.services.invoices.teleport"
    ):
        registry._service(missing)
    batched = Operation("billing.customers.create", None, batching=Batching("item_batch_size", "x"))
    with pytest.raises(LookupError, match="create_together"):
        registry._service(batched, "_together")


def test_registering_on_another_app_gives_it_the_same_tasks() -> None:
    other = Celery("other", set_as_current=False)
    register(other)
    assert {name for name in other.tasks if name.startswith("billing.")} == set(OPERATIONS)


@pytest.mark.parametrize(("setting", "level"), [("debug", logging.DEBUG), ("WARNING", logging.WARNING)])
def test_billing_log_level_sets_the_projects_loggers(
    setting: str, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.settings import get_settings

    logger = logging.getLogger("billing")
    before = logger.level
    monkeypatch.setenv("BILLING_LOG_LEVEL", setting)
    get_settings.cache_clear()
    try:
        configure(logging.getLogger("test.app.level"))  # a logger of its own: no handler of pytest changed
        assert logging.getLogger("billing.tasks").getEffectiveLevel() == level
    finally:
        logger.setLevel(before)
