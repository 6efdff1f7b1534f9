"""The envelope check, fuzzed: it never raises on any JSON, and what it accepts Celery can take.

The oracle for "Celery can take it" is what a worker's main process does with a task entry:
kombu builds the message (base64 body), Celery's ``Request`` reads the headers and the
decoded body, the strategy reads the time limits and the ETA. None may raise on an accepted
entry; a refused one never reaches them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection
from kombu.utils.imports import symbol_by_name

from tasks.envelope import body_problem, envelope_problem
from tests.hostile.shapes import envelope
from worker.app import app

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
PATHS = [
    "properties", "properties.delivery_tag", "properties.delivery_info", "properties.body_encoding",
    "properties.priority", "properties.reply_to", "body", "content-type", "content-encoding", "headers",
    "headers.task", "headers.id", "headers.timelimit", "headers.eta", "headers.expires", "headers.retries",
    "headers.shadow", "headers.group", "headers.ignore_result", "headers.stamps", "headers.stamped_headers",
    "headers.root_id", "headers.argsrepr",
]  # fmt: skip


def mutate(entry: dict[str, Any], path: str, value: Any, delete: bool) -> None:
    *parents, last = path.split(".")
    target: Any = entry
    for part in parents:
        if not isinstance(target, dict) or not isinstance(target.get(part), dict):
            return
        target = target[part]
    if delete:
        target.pop(last, None)
    else:
        target[last] = value


def celery_takes(entry: dict[str, Any]) -> None:
    """What the worker's main process does with an accepted entry; raises if it cannot."""
    with Connection("memory://") as connection:
        channel = connection.default_channel
        message = channel.Message(entry, channel=channel)
        body = message.decode()
        assert body_problem(body) is None
        task = app.tasks[entry["headers"]["task"]]
        request_class = symbol_by_name(task.Request)
        request = request_class(message, app=app, task=task, hostname="fuzz", body=message.body,
                                headers=message.headers, decoded=False)  # fmt: skip
        _hard, _soft = request.time_limits
        _ = (request.eta, request.expires, request.argsrepr, request.kwargsrepr, request.request_dict)


@pytest.fixture(autouse=True, scope="module")
def tasks_loaded() -> None:
    app.loader.import_default_modules()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(st.tuples(st.sampled_from(PATHS), JSON, st.booleans()), min_size=1, max_size=4),
    body=st.one_of(st.none(), JSON),
)
def test_a_mutated_envelope_is_refused_or_taken(mutations: list[tuple[str, Any, bool]], body: Any) -> None:
    entry = envelope("billing.default") if body is None else envelope("billing.default", body=body)
    for path, value, delete in mutations:
        mutate(entry, path, value, delete)
    entry = json.loads(json.dumps(entry))  # as it would arrive
    problem = envelope_problem(entry, max_eta=4e9)
    if problem is None:
        try:
            with Connection("memory://") as connection:
                channel = connection.default_channel
                problem = body_problem(channel.Message(entry, channel=channel).decode())
        except Exception:
            return  # the transport refuses what kombu cannot decode (tasks.broker: Channel._checked)
    if problem is None:
        celery_takes(entry)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_judged_without_raising(value: Any) -> None:
    assert envelope_problem(value) is None or True
    body_problem(value)
