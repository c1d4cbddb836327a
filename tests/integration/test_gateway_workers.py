"""``hetgateway gateway --workers 2`` (``HETSERVE_WORKERS=2``) against the real embedded Triton:
two worker processes answer on one port, each with its own gRPC channel to Triton; a counter
read from ``/metrics`` is the number of requests sent, whichever worker answered them and
whichever answers the scrape; SIGTERM or Ctrl-C (SIGINT) stops the parent and every worker;
with a drain, SIGTERM first makes every worker answer /readyz 503 while predictions are still
served (each closing its connection), then everything stops."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = 2
EXAMPLE = Path(__file__).resolve().parents[2] / "server/src/hetgateway/static/examples"
REQUESTS_PER_ROUND = 16
MAX_ROUNDS = 20
SCRAPES = 6
STOP_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 30
COUNT_SETTLE_S = 5.0
PREDICT_ROUTE = "/v1/models/{model}/predict"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def workers_of(parent_pid: int) -> list[psutil.Process]:
    """The uvicorn worker processes under the gateway's parent (spawned interpreters)."""
    return [
        child for child in psutil.Process(parent_pid).children()
        if any("spawn_main" in part for part in child.cmdline())
    ]


def predict(url: str, model: str, image: bytes) -> int:
    boundary = "hetserve-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; "
        f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n"
    ).encode() + image + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/v1/models/{model}/predict", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # a new connection each time
        answer.read()
        return answer.status


def scraped_predictions(url: str, model: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "hetserve_http_requests"
        for sample in family.samples
        if sample.name == "hetserve_http_requests_total"
        and sample.labels["route"] == PREDICT_ROUTE and sample.labels["model"] == model
        and sample.labels["status"] == "200"
    )


def predictions_written_by(worker: psutil.Process, model: str) -> float:
    """What one worker has counted itself, read from its own multiprocess file."""
    directory = Path(worker.environ()[METRICS_DIR_ENV])
    path = directory / f"counter_{worker.pid}.db"
    if not path.exists():
        return 0.0
    total = 0.0
    for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
        if ("hetserve_http_requests_total" in key and PREDICT_ROUTE in key
                and f'"{model}"' in key and '"200"' in key):
            total += value
    return total


def counted_by(workers: list[psutil.Process], model: str, *, expected: float) -> list[float]:
    """What each worker has counted, once the counts add up to ``expected`` or after
    ``COUNT_SETTLE_S``: a request is counted when its answer has been sent (the count covers
    the whole request), so the client can read the answer a moment before its worker counts it."""
    deadline = time.monotonic() + COUNT_SETTLE_S
    while True:
        counts = [predictions_written_by(worker, model) for worker in workers]
        if sum(counts) >= expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


@pytest.fixture
def two_workers(triton_server, model_repository, launch_gateway_process):
    gateway = launch_gateway_process(
        triton_server.grpc_url, wait_for="/readyz", workers=WORKERS,
        model_repositories=f'["{model_repository}"]',
    )
    deadline = time.monotonic() + 60
    while len(workers_of(gateway.pid)) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.2)
    return gateway


def test_metrics_count_every_request_whichever_worker_answered(two_workers, model_cards):
    model = sorted(model_cards)[0]
    image = (EXAMPLE / "6_shirt.png").read_bytes()
    workers = workers_of(two_workers.pid)
    assert len(workers) == WORKERS
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(MAX_ROUNDS):
            statuses = list(pool.map(lambda _: predict(two_workers.url, model, image),
                                     range(REQUESTS_PER_ROUND)))
            assert statuses == [200] * REQUESTS_PER_ROUND
            sent += REQUESTS_PER_ROUND
            if all(predictions_written_by(w, model) > 0 for w in workers):
                break
    per_worker = counted_by(workers, model, expected=sent)
    assert all(count > 0 for count in per_worker), f"one worker answered everything: {per_worker}"
    assert sum(per_worker) == sent
    for _ in range(SCRAPES):  # each scrape on a new connection, answered by either worker
        assert scraped_predictions(two_workers.url, model) == sent


def channels_to(port: int, workers: list[psutil.Process]) -> dict[int, set[int]]:
    """Each worker's local ports of its established connections to ``port``."""
    return {
        worker.pid: {
            conn.laddr.port for conn in worker.net_connections(kind="tcp")
            if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
        }
        for worker in workers
    }


def test_each_worker_holds_its_own_channel_to_triton(two_workers, triton_server):
    triton_port = int(triton_server.grpc_url.rsplit(":", 1)[1])
    workers = workers_of(two_workers.pid)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S  # /readyz answered by one; the other starts
    channels = channels_to(triton_port, workers)
    while not all(channels.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
        channels = channels_to(triton_port, workers)
    assert len(channels) == WORKERS
    assert all(channels.values()), channels
    first, second = channels.values()
    assert not first & second


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT],
                         ids=["sigterm", "ctrl-c"])
def test_a_signal_stops_the_parent_and_every_worker(two_workers, stop_signal):
    processes = [psutil.Process(two_workers.pid), *psutil.Process(two_workers.pid).children()]
    assert len(workers_of(two_workers.pid)) == WORKERS
    two_workers.signal(stop_signal)
    assert two_workers.wait(timeout_s=STOP_TIMEOUT_S) == 0
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_running(p) for p in processes):
        time.sleep(0.1)
    assert [p.pid for p in processes if _running(p)] == []


def test_sigterm_drains_every_worker_before_the_gateway_stops(
    triton_server, model_repository, launch_gateway_process, model_cards
):
    drain_s = 5.0
    gateway = launch_gateway_process(
        triton_server.grpc_url, wait_for="/readyz", workers=WORKERS, drain_s=drain_s,
        model_repositories=f'["{model_repository}"]',
    )
    deadline = time.monotonic() + 60
    while len(workers_of(gateway.pid)) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.2)
    processes = [psutil.Process(gateway.pid), *workers_of(gateway.pid)]
    model = sorted(model_cards)[0]
    image = (EXAMPLE / sorted(p.name for p in EXAMPLE.iterdir())[0]).read_bytes()

    gateway.signal(signal.SIGTERM)
    signalled = time.monotonic()
    # the parent passes SIGTERM on to each worker: wait (bounded) until several new
    # connections in a row, whichever worker takes them, find the gateway draining
    draining = 0
    while draining < 2 * WORKERS and time.monotonic() - signalled < drain_s / 2:
        draining = draining + 1 if _status(f"{gateway.url}/readyz") == (503, "close") else 0
    readiness, answers = [], []
    while time.monotonic() - signalled < drain_s - 0.5:
        readiness.append(_status(f"{gateway.url}/readyz"))  # a new connection each time
        answers.append(predict(gateway.url, model, image))
    assert set(readiness) == {(503, "close")}, readiness  # whichever worker answered
    assert set(answers) == {200}
    assert gateway.wait(timeout_s=STOP_TIMEOUT_S) == 0
    assert time.monotonic() - signalled >= drain_s
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_running(p) for p in processes):
        time.sleep(0.1)
    assert [p.pid for p in processes if _running(p)] == []


def _status(url: str) -> tuple[int, str | None]:
    """Status and Connection header of a GET (a new connection)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers.get("connection")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("connection")


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
