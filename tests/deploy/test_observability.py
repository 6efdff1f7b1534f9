"""The monitoring files in deploy/: Prometheus configs and alert rules through promtool (config,
rules and the rules' unit tests), the Grafana dashboard, and the metrics every one of them names,
checked against what the worker and the exporter really expose (collected from the code, not
listed by hand). Also: the exporter, the metrics port and JSON logs in every deploy file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES
from tests.deploy.files import DEPLOY, compose, env_file, k8s, pod_specs, unit
from worker.exporter import BillingCollector
from worker.metrics import _task_metrics
from worker.settings import get_settings

PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "billing-dashboard.json"
PROMTOOL = shutil.which("promtool")
# Debian's promtool (apt-get install prometheus) is built without Kubernetes service discovery:
# prometheus-k8s.yml is checked by structure below instead.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not REQUIRE_SERVICES, reason="no promtool (.ci/run installs it: apt prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is required under CI (.ci/run installs the prometheus package)"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


@needs_promtool
@pytest.mark.parametrize(
    "command",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts.test.yml"),
    ],
    ids=" ".join,
)
def test_promtool_accepts_the_config_the_rules_and_their_tests(command: tuple[str, ...]) -> None:
    result = promtool(*command)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names a scrape of a worker and of the exporter shows, from the code itself: the
    worker's task metrics and a collection of the exporter on a migrated SQLite database with a
    pending item and a finalized invoice, and a queued and an unacknowledged message and a beat
    job's success in a fake Redis."""
    from worker.db import dispose_engines
    from worker.metrics import BEAT_LAST_SUCCESS_KEY
    from worker.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('observability') / 'billing.db'}"
    upgrade(url)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_BROKER_URL", "redis://fake:6379/0")
    get_settings.cache_clear()
    try:
        collector = BillingCollector(get_settings())
        redis = fakeredis.FakeRedis()
        redis.hset(BEAT_LAST_SUCCESS_KEY, "billing.maintenance.purge", "1")
        collector._redis = redis
        list(collector.collect())  # primes the finalized-invoice counters; then one is finalized
        from tests.support import customer, items, run_chain

        ada = customer("usd")
        items(ada, "usd", [100])
        redis.lpush("billing.items", b"{}")
        redis.hset("unacked", "tag", b'[{}, "billing.items", "billing.items"]')
        run_chain(ada, currency="usd", finalize=True)
        items(ada, "eur", [200])  # pending
        names = {sample.name for family in collector.collect() for sample in family.samples}
        total, durations = _task_metrics()
        total.labels("t", "success").inc(0)
        durations.labels("t", "success").observe(0)
        for metric in (total, durations):
            names |= {sample.name for family in metric.collect() for sample in family.samples}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        dispose_engines()
    assert {"billing_tasks_total", "billing_task_duration_seconds_bucket", "billing_queue_messages",
            "billing_invoices_finalized_total", "billing_pending_invoice_items"} <= names  # fmt: skip
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(billing_[a-z_]+)\b", expr)) | set(re.findall(r"\bup\b", expr))


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]  # fmt: skip


def test_every_dashboard_panel_queries_metrics_the_exporter_or_a_worker_exposes(exposed: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"]) - {"up"}
            assert names, (panel["title"], target["expr"])
            assert names <= exposed, (panel["title"], names - exposed)


def test_every_alert_names_exposed_metrics_and_the_issue_asks_for_each_kind(exposed: set[str]) -> None:
    rules = alert_rules()
    for rule in rules:
        assert metric_names(rule["expr"]) - {"up"} <= exposed, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    names = {rule["alert"] for rule in rules}
    # queue age, parked > 0, outbox lag, beat stale, failure rate
    assert {"BillingQueueStuck", "BillingParkedMessages", "BillingOutboxLag", "BillingBeatStale",
            "BillingTaskFailureRate"} <= names  # fmt: skip
    stale = next(rule for rule in rules if rule["alert"] == "BillingBeatStale")["expr"]
    from tasks.operations import OPERATIONS

    jobs = {name for name, op in OPERATIONS.items() if op.kind in ("job", "sweep")}
    assert set(re.findall(r'job="([^"]+)"', stale)) == jobs  # every beat job is watched


def test_the_kubernetes_scrape_config_finds_the_pods_the_manifests_make() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus-k8s.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    pods = pod_specs()
    for job in config["scrape_configs"]:
        keeps = {
            tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
        }
        if job["job_name"] == "billing-flower":
            assert keeps == {("__meta_kubernetes_service_name",): "billing-flower"}
            k8s("Service", "billing-flower")
            assert job["basic_auth"]["password_file"]
            continue
        name = keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)]
        port = keeps[("__meta_kubernetes_pod_container_port_name",)]
        assert name in pods, name
        ports = [p["name"] for c in pods[name]["containers"] for p in c.get("ports", [])]
        assert port in ports, (name, ports)
    static = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert [job["job_name"] for job in static["scrape_configs"]] == [
        job["job_name"] for job in config["scrape_configs"]
    ]


def test_every_deploy_file_runs_the_exporter_the_metrics_port_and_json_logs() -> None:
    services = compose()["services"]
    assert services["exporter"]["command"][:2] == ["billing", "exporter"]
    assert "BILLING_DATABASE_URL" in services["exporter"]["environment"]
    assert services["worker"]["environment"]["BILLING_METRICS_PORT"] == "9808"
    assert services["worker"]["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert services["flower"]["command"][:2] == ["billing", "flower"]
    for name in ("worker", "beat", "flower", "exporter"):
        assert services[name]["environment"]["BILLING_LOG_FORMAT"] == "json", name

    pods = pod_specs()
    (exporter,) = pods["billing-exporter"]["containers"]
    assert exporter["command"][:2] == ["billing", "exporter"]
    (worker,) = pods["billing-worker"]["containers"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["BILLING_METRICS_PORT"] == str(worker["ports"][0]["containerPort"])
    (flower,) = pods["billing-flower"]["containers"]
    assert flower["command"][:2] == ["billing", "flower"]
    assert k8s("ConfigMap", "billing-config")["data"]["BILLING_LOG_FORMAT"] == "json"

    assert unit("billing-exporter.service")["ExecStart"][0].split()[1:3] == [
        "exporter",
        "--address=127.0.0.1",
    ]
    assert unit("billing-exporter.service")["EnvironmentFile"] == [
        "/etc/billing/broker.env",
        "/etc/billing/database.env",
    ]
    assert unit("billing-flower.service")["ExecStart"][0].split()[1] == "flower"
    worker_unit = unit("billing-worker@.service")
    assert "-/etc/billing/worker-%i.env" in worker_unit["EnvironmentFile"]
    assert worker_unit["Environment"] == ["PROMETHEUS_MULTIPROC_DIR=/run/billing-worker-%i"]
    assert worker_unit["RuntimeDirectory"] == ["billing-worker-%i"]
    assert env_file("worker-1.env.example")["BILLING_METRICS_PORT"] == "9101"
    assert env_file("broker.env.example")["BILLING_LOG_FORMAT"] == "json"


def test_no_deploy_file_runs_flower_around_billing_flower() -> None:
    """Plain `celery flower` would leave /metrics open: every deploy file uses `billing flower`."""
    for path in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.service"), DEPLOY / "Containerfile"]:
        assert not re.search(r"worker\.app\W+flower|celery\s.*\bflower\b", Path(path).read_text()), path.name
