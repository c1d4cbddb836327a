"""Prometheus scrapes the gateway and Triton and loads the alert rules; the Grafana dashboard
only queries metrics that exist, from the datasource that is provisioned; the alert on the
label-free accuracy estimate passes ``promtool``'s checks and its unit test."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hetcontract import OutputName
from hetgateway.accuracy_monitor import AccuracyMonitor
from hetgateway.admission import AdmissionGate
from hetgateway.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "docker"
# One dashboard for compose (mounted from here) and the chart (its ConfigMap reads it).
DASHBOARD = ROOT / "deploy" / "helm" / "hetserve" / "dashboards" / "hetserve.json"
TRITON_METRIC_PREFIX = "nv_"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_WORDS = {"sum", "avg", "by", "rate", "histogram_quantile", "le", "model", "route",
                "status"}
PROMETHEUS = DOCKER / "prometheus"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _gateway_metric_names() -> set[str]:
    """Every sample name the gateway exposes once each metric has seen a value."""
    metrics = GatewayMetrics()
    AdmissionGate(max_in_flight=1, metrics=metrics).try_enter()  # in flight: 1
    metrics.requests.labels(method="GET", route="/healthz", model="", status="200").inc()
    metrics.request_seconds.labels(method="GET", route="/healthz").observe(0.01)
    metrics.triton_seconds.labels(model="m").observe(0.01)
    metrics.batch_size.labels(model="m").observe(4)
    metrics.observe_uncertainty(
        "m",
        {
            OutputName.PREDICTIVE_ENTROPY.value: np.array([0.2, 1.1], dtype=np.float32),
            OutputName.TOPK_PROBS.value: np.array([[0.9, 0.05], [0.4, 0.3]], dtype=np.float32),
        },
    )
    AccuracyMonitor(metrics, window_images=10).observe("m", [True, False],
                                                       calibrated_accuracy=0.8)
    text = metrics.exposition().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def _queried_metric_names(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = set()
    for expr in exprs:
        without_labels = re.sub(r"\{[^}]*\}", "", expr)
        names |= {
            w
            for w in re.findall(r"[a-z_][a-z0-9_]*", without_labels)
            if "_" in w and w not in PROMQL_WORDS and not w.startswith("__")
        }
    return names


def test_prometheus_scrapes_the_gateway_and_triton_metrics_ports() -> None:
    config = _yaml(DOCKER / "prometheus" / "prometheus.yml")
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert targets == {"gateway": ["gateway:8082"], "triton": ["triton:8002"]}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
    assert config["rule_files"] == ["alerts.yml"]


def _promtool() -> str:
    local = Path(sys.executable).with_name("promtool")
    found = str(local) if local.is_file() else shutil.which("promtool")
    if found is None:
        pytest.skip("prerequisite missing: promtool (make setup: scripts/promtool.sh)")
    return found


def test_promtool_accepts_the_config_and_the_alert_rules() -> None:
    for check in (["check", "config", str(PROMETHEUS / "prometheus.yml")],
                  ["check", "rules", str(PROMETHEUS / "alerts.yml")]):
        result = subprocess.run([_promtool(), *check], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_accuracy_alert_fires_on_a_sustained_drop_over_enough_images() -> None:
    """alerts_test.yml: 8 points down for 10 minutes over 1000 images fires; 4 points down
    (two pods averaged), or 25 points down over 200 images, does not."""
    result = subprocess.run([_promtool(), "test", "rules", "alerts_test.yml"],
                            cwd=Path(__file__).parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_compares_the_metrics_the_gateway_exports() -> None:
    rules = _yaml(PROMETHEUS / "alerts.yml")["groups"][0]["rules"]
    queried = _queried_metric_names({"panels": [{"targets": [{"expr": r["expr"]}]}
                                                for r in rules]})
    assert queried == {"hetserve_calibrated_accuracy", "hetserve_estimated_accuracy",
                       "hetserve_estimated_accuracy_window_images"}
    assert queried <= _gateway_metric_names()


def test_dashboard_queries_only_metrics_the_gateway_or_triton_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = _gateway_metric_names()
    queried = _queried_metric_names(dashboard)
    assert queried, "the dashboard should query something"
    unknown = {
        name
        for name in queried
        if name not in exported and not name.startswith(TRITON_METRIC_PREFIX)
    }
    assert not unknown, f"dashboard queries metrics nobody exports: {sorted(unknown)}"


@pytest.mark.parametrize(
    "metric",
    [
        "hetserve_http_requests_total",
        "hetserve_http_request_duration_seconds_bucket",
        "hetserve_triton_request_duration_seconds_bucket",
        "hetserve_predictive_entropy_nats_bucket",
        "hetserve_top1_probability_bucket",
        "hetserve_predict_batch_size_bucket",
        "hetserve_http_requests_refused_total",
        "hetserve_estimated_accuracy",
        "hetserve_calibrated_accuracy",
    ],
)
def test_dashboard_shows_latency_errors_and_the_uncertainty_distributions(metric: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert metric in _queried_metric_names(dashboard)


def test_dashboard_panels_use_the_provisioned_datasource_and_are_laid_out_once() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    datasource = _yaml(DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    provider = _yaml(DOCKER / "grafana" / "provisioning" / "dashboards" / "hetserve.yml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
