"""The CPU stack (docker-compose.yml + docker-compose.cpu.yml) run with podman, with the options
its compose files give: Triton on the CPU, the gateway in front of it, Prometheus scraping
both, the Locust profile; it answers what `make serve` answers, runs as non-root on read-only
root filesystems where the compose files say so, and stopping it leaves nothing behind."""

from __future__ import annotations

import csv
import time

import httpx
import pytest
from answers import assert_same_answers, png_base64
from local_images import ROOT

MODELS = ("fashion_het", "fashion_det")
IMAGES_PER_REQUEST = 8
SCRAPE_TIMEOUT_S = 60
LOAD_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def gateway(cpu_stack) -> str:
    return cpu_stack.url("gateway", 8080)


def test_every_container_runs_as_a_non_root_user(cpu_stack):
    for service in cpu_stack.started:
        answer = cpu_stack.exec(service, "id", "-u")
        assert answer.returncode == 0 and answer.stdout.strip() != "0", (service, answer)


def test_root_filesystems_are_read_only_where_the_compose_files_say_so(cpu_stack):
    read_only = [s for s in cpu_stack.started if cpu_stack.services[s].get("read_only")]
    assert set(read_only) == {"triton", "gateway"}
    for service in read_only:
        assert cpu_stack.inspect(service)["HostConfig"]["ReadonlyRootfs"] is True
        refused = cpu_stack.exec(service, "sh", "-c", "echo x > /opt/probe")
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, service
        for path in cpu_stack.services[service].get("tmpfs", []):
            assert cpu_stack.exec(service, "sh", "-c", f"echo x > {path}/probe").returncode == 0


def test_the_gateway_is_ready_with_both_models_served_by_the_cpu_triton(gateway):
    assert httpx.get(f"{gateway}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200
    listed = httpx.get(f"{gateway}/v1/models", timeout=5).json()
    assert {model["name"] for model in listed["models"]} == set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_the_container_gateway_answers_what_make_serve_answers(
    gateway, make_serve_url, fashion_mnist, model
):
    assert_same_answers(gateway, make_serve_url, fashion_mnist.images[:IMAGES_PER_REQUEST], model)


def test_metrics_of_the_gateway_and_of_triton_count_the_predictions(
    cpu_stack, gateway, fashion_mnist
):
    body = {"inputs": [{"image": png_base64(fashion_mnist.images[0])}]}
    assert httpx.post(f"{gateway}/v1/models/fashion_het/predict", json=body,
                      timeout=60).status_code == 200
    assert httpx.get(f"{gateway}/metrics", timeout=5).status_code == 404  # not the API port
    gateway_metrics = httpx.get(f"{cpu_stack.url('gateway', 8082)}/metrics", timeout=5).text
    predictions = [line for line in gateway_metrics.splitlines()
                   if line.startswith("hetserve_http_requests_total{")
                   and 'model="fashion_het"' in line and 'status="200"' in line]
    assert predictions and float(predictions[0].rsplit(" ", 1)[1]) >= 1
    triton_metrics = httpx.get(f"{cpu_stack.url('triton', 8002)}/metrics", timeout=5).text
    counts = [line for line in triton_metrics.splitlines()
              if line.startswith('nv_inference_request_success{model="fashion_het"')]
    assert counts and float(counts[0].rsplit(" ", 1)[1]) >= 1


def test_prometheus_scrapes_the_gateway_and_triton(cpu_stack, gateway):
    prometheus = cpu_stack.url("prometheus", 9090)
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        if health == {"gateway": "up", "triton": "up"}:
            break
        time.sleep(1)
    assert health == {"gateway": "up", "triton": "up"}
    for query in ("hetserve_http_requests_total", "nv_inference_request_success"):
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
        assert answer.json()["data"]["result"], query


def test_the_load_profile_runs_locust_against_the_gateway_without_failures(cpu_stack):
    (mount,) = [v for v in cpu_stack.services["locust"]["volumes"] if v["target"] == "/results"]
    results = ROOT / mount["source"]
    for old in results.glob("locust_*.csv"):
        old.unlink()
    finished = cpu_stack.run_once("locust", timeout_s=LOAD_TIMEOUT_S)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    with (results / "locust_stats.csv").open() as stats:
        (total,) = [row for row in csv.DictReader(stats) if row["Name"] == "Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == 0


def test_stopping_the_stack_leaves_no_container_volume_or_listening_port(cpu_stack):
    addresses = [cpu_stack.url(service, port) for service, ports in cpu_stack.network.ports.items()
                 if service in cpu_stack.started for port in ports]
    cpu_stack.down()
    assert cpu_stack.leftovers() == []
    for address in addresses:
        with pytest.raises(httpx.ConnectError):
            httpx.get(address, timeout=2)
