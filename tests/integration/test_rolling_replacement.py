"""A rolling replacement under load loses no request: a gateway follows a DNS name (a DNS
server on loopback that the test controls, ``dns://127.0.0.1:PORT/NAME:PORT``) that resolves
to two ``hetgateway triton`` replicas; 8 clients send one-image predictions back to back while
each replica is replaced in turn (a new one started and published, then the old one taken
out), in both orders Kubernetes may give: out of DNS then SIGTERM, and SIGTERM then out of
DNS. Every request is answered 200.

The replicas stop at once on SIGTERM (no drain of their own, as a bare Triton would): a
Triton shutting down answers "unknown model" at once and stops its gRPC server about 2 s
later, so the gateway must send those calls elsewhere, and keep the channel of a replica that
left DNS open for the calls still on it. Since a lost request is a race, the replacement is
repeated (twice per order), bounded in time.

Also: ``hetgateway triton`` with a drain keeps serving for its drain after SIGTERM, then
stops.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPLACEMENTS_PER_ORDER = 2
CLIENTS = 8
CHECK_INTERVAL_S = 0.25
"""The gateway resolves the name this often: a replica taken out of DNS first leaves the pool
while calls are still running on it (before its SIGTERM, 0.5 s later), every time."""
LAUNCHER_SEES_READY_S = 1.0
"""Time for ``hetgateway triton`` to see its Triton ready (it polls every 0.2 s)."""
SETTLE_S = 1.0
"""Load kept running after the last replica left, so that late failures are counted too."""


@pytest.fixture(scope="module")
def fleet_module(bench_module):
    """``bench/replica_fleet.py``: replicas, DNS records, steady load, a replacement."""
    return bench_module("replica_fleet")


@pytest.fixture
def fleet(fleet_module, model_repository: Path, tmp_path: Path, loopback_dns) -> Iterator:
    with fleet_module.ReplicaFleet(model_repository, tmp_path, loopback_dns,
                                   drain_s=0.0) as replicas:  # a Triton that stops at once
        yield replicas


def test_replacing_each_replica_in_turn_under_load_loses_no_request(
    fleet_module, fleet, launch_gateway, fashion_mnist
) -> None:
    first, second = fleet.start(), fleet.start()
    fleet.wait_ready(first, second)
    fleet.publish(first, second)
    gateway = launch_gateway(fleet.target(), wait_for="/readyz",
                             triton_replica_check_interval_s=CHECK_INTERVAL_S)
    assert fleet_module.gateway_counts(gateway) == (2, 2)
    body = fleet_module.one_image_body(fashion_mnist.images[0])
    orders = [fleet_module.DNS_FIRST, fleet_module.SIGTERM_FIRST] * REPLACEMENTS_PER_ORDER

    replacements = []
    with fleet_module.SteadyLoad(f"{gateway}/v1/predict", body, clients=CLIENTS) as load:
        pool = [first, second]
        for order in orders:
            oldest = pool.pop(0)
            replacement = fleet_module.replace(fleet, gateway, oldest, order=order)
            replacements.append(replacement)
            pool.append(replacement.new)
            served = dict(fleet_module.served_by([replacement.new]))
            assert oldest.wait_exit() == 0, oldest.log_tail()
        time.sleep(SETTLE_S)
        still_served = dict(fleet_module.served_by(pool))

    answers = load.answers
    assert load.failures() == {}, f"{len(answers)} requests: {load.failures()}"
    assert len(answers) >= CLIENTS * len(orders) * 5  # load ran through every replacement
    for replacement in replacements:  # each window had traffic too
        assert len(load.since(replacement.started_s)) > 0
    assert served, "the newest replica served none"
    assert min(still_served.values()) > 0, still_served
    assert fleet_module.gateway_counts(gateway) == (2, 2)


def test_hetgateway_triton_serves_on_for_its_drain_after_sigterm_then_stops(
    fleet_module, model_repository: Path, tmp_path: Path, unused_port
) -> None:
    http_port, grpc_port, metrics_port = unused_port(), unused_port(), unused_port()
    address = fleet_module.ADDRESSES[-1]
    drain_s = 3.0
    command = [sys.executable, "-m", "hetgateway.cli", "triton", "--model-repository",
               str(model_repository), "--address", address, "--http-port", str(http_port),
               "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
               "--repository-poll", "0", "--drain", str(drain_s), "--log-level", "warning"]
    ready_url = f"http://{address}:{http_port}/v2/health/ready"
    with open(tmp_path / "replica.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + fleet_module.READY_BOUND_S
        while not _ready(ready_url):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(LAUNCHER_SEES_READY_S)  # a SIGTERM while it still starts stops it at once
        process.terminate()
        signalled = time.monotonic()
        readiness = []
        while time.monotonic() - signalled < drain_s - 0.5:
            readiness.append(_ready(ready_url))
            time.sleep(0.2)
        assert readiness and all(readiness)  # Triton untouched while the replica drains
        assert process.wait(timeout=fleet_module.EXIT_BOUND_S) == 0
        assert time.monotonic() - signalled >= drain_s
        assert not _ready(ready_url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
