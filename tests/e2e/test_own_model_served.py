"""A user's own models, served by ``hetgateway serve`` as a user runs it: a 3-class RGB model
and a 2-class grey one answer the SDK's, the CLI's and the web page's default calls; a new
version exported while the SDK keeps asking is served without a restart and without one failed
request; a version whose files are broken is refused with one log line while the previous
version keeps serving; loading and unloading from outside need the API key. The page tests
save ``artifacts/browser/page_own_three.png`` and ``page_own_two.png`` (git-ignored).

Specification of the switch: every request sent after the first answer from version 2 arrived
is answered by version 2, with version 2's own numbers (its weights differ from version 1's).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hetclient import Client
from hetclient.errors import APIStatusError
from hetcontract import InputSpec
from hetexport.model import ModelSpec, build_model
from hetexport.onnx.export import export_to_repository
from hetexport.repo.layout import next_version
from PIL import Image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

READY_TIMEOUT_S = 240.0
SWITCH_TIMEOUT_S = 120.0
LOAD_THREADS = 3
MIN_REQUESTS_EACH_SIDE = 20
THREE = "three"
TWO = "two"
KEY = "own-model-test-key"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "artifacts" / "browser"


def tiny_model(*, labels: tuple[str, ...], channels: int, seed: int):
    """A small-CNN HET model with seeded random weights (what is served is under test, not
    how well it learned)."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        num_classes=len(labels), num_factors=1, eval_mc_samples=16, labels=labels,
        backbone_kwargs={"in_channels": channels, "widths": [4, 4], "feature_dim": 16,
                         "input_size": [16, 16]},
        input=InputSpec(shape=(channels, 16, 16), mean=(0.5,) * channels, std=(0.25,) * channels,
                        channel_order="RGB" if channels == 3 else "L"),
    )
    return build_model(spec).eval()


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Served:
    url: str
    grpc_url: str
    repository: Path
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, unused_port: Callable[[], int]
           ) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("own-models")
    repository = root / "model_repo"
    export_to_repository(tiny_model(labels=("cat", "dog", "fox"), channels=3, seed=0),
                         repository, THREE)
    export_to_repository(tiny_model(labels=("no", "yes"), channels=1, seed=0), repository, TWO)
    port, grpc = unused_port(), unused_port()
    log = root / "serve.log"
    command = [
        sys.executable, "-m", "hetgateway.cli", "serve", "--model-repository", str(repository),
        "--port", str(port), "--triton-http-port", str(unused_port()),
        "--triton-grpc-port", str(grpc), "--triton-metrics-port", str(unused_port()),
        "--repository-poll", "0.5", "--log-level", "info",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETSERVE_")}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    served = Served(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc}", repository, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, served.log_text()[-3000:]
            try:
                if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"hetgateway serve not ready:\n{served.log_text()[-3000:]}")
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def served_version(served: Served, model: str) -> str:
    with Client(served.url) as client:
        return client.predict(png(0), model=model).model.version


def wait_for_log(served: Served, text: str, *, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [line for line in served.log_text().splitlines() if text in line]
        if lines:
            return lines[-1]
        time.sleep(0.2)
    pytest.fail(f"no log line with {text!r} in {timeout_s} s:\n{served.log_text()[-3000:]}")


# ---- any class count ------------------------------------------------------------------------


def test_the_sdks_default_call_answers_a_3_and_a_2_class_model(served: Served) -> None:
    with Client(served.url) as client:
        three = client.predict(png(1), model=THREE)
        two = client.predict(png(1), model=TWO)
        assert [p.label for p in three.results[0].predictions] != []
        assert {p.label for p in three.results[0].predictions} == {"cat", "dog", "fox"}
        assert {p.label for p in two.results[0].predictions} == {"no", "yes"}
        assert len(two.results[0].uncertainty.confusable[0].confused_with) == 1  # K - 1, share 1
        assert len(client.predict(png(1), model=THREE, top_k=2).results[0].predictions) == 2
        with pytest.raises(APIStatusError, match="top_k must be between 1 and 3") as error:
            client.predict(png(1), model=THREE, top_k=4)
        assert error.value.status_code == 422


def test_the_cli_default_call_answers_a_3_class_model(served: Served, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png(2))
    result = subprocess.run(
        [sys.executable, "-m", "hetclient.cli", "predict", str(image), "--model", THREE,
         "--url", served.url, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["results"][0]["predictions"]) == 3


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium (Debian package 'chromium')")
@pytest.mark.parametrize(("model", "classes"), [(THREE, 3), (TWO, 2)])
def test_the_web_page_shows_every_class_of_a_small_model(
    served: Served, tmp_path: Path, model: str, classes: int
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    image = tmp_path / "photo.png"
    image.write_bytes(png(3))
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(f"{served.url}/")
            tab.wait_for_selector("body[data-ready='true']")
            tab.check(f"input[name='model'][value='{model}']")
            tab.wait_for_function(
                f"document.querySelectorAll('#top-k option').length === {classes}")
            tab.set_input_files("input[type='file']", str(image))
            tab.wait_for_selector(f"[data-testid='result'][data-model='{model}']:not([hidden])")
            bars = tab.query_selector_all("[data-testid='prob-bar']")
            cells = tab.query_selector_all("[data-testid='heatmap-cell']")
            shown_error = tab.is_visible("[data-testid='error']")
            details = tab.text_content("#answered-details")
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SCREENSHOT_DIR / f"page_own_{model}.png"), full_page=True)
        finally:
            browser.close()
    assert not errors and not shown_error
    assert details.startswith("· version ")  # the version that computed the answer
    assert len(bars) == classes and len(cells) == classes * classes


# ---- new versions without downtime ----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    sent: float
    received: float
    version: str | None
    top_probability: float | None
    error: str | None


def steady_load(url: str, stop: threading.Event, answers: list[Answer]) -> None:
    """One SDK client asking for the same image until ``stop``; every outcome recorded."""
    with Client(url, max_retries=0) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                answer = client.predict(png(4), model=THREE)
                result = answer.results[0].predictions[0]
                answers.append(Answer(sent, time.monotonic(), answer.model.version,
                                      result.probability, None))
            except Exception as exc:  # every failure counts against the switch
                answers.append(Answer(sent, time.monotonic(), None, None, repr(exc)))


def test_a_new_version_is_served_under_load_with_no_failed_request(served: Served) -> None:
    assert served_version(served, THREE) == "1"
    answers: list[Answer] = []
    stop = threading.Event()
    threads = [threading.Thread(target=steady_load, args=(served.url, stop, answers))
               for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        export_to_repository(tiny_model(labels=("cat", "dog", "fox"), channels=3, seed=1),
                             served.repository, THREE,
                             version=next_version(served.repository, THREE))
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while not any(a.version == "2" for a in answers) and time.monotonic() < deadline:
            time.sleep(0.1)
        switched = time.monotonic()
        while (sum(a.sent > switched for a in answers) < MIN_REQUESTS_EACH_SIDE
               and time.monotonic() < deadline):
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    failures = [a.error for a in answers if a.error is not None]
    assert failures == [], failures[:3]
    first_v2 = min(a.received for a in answers if a.version == "2")
    after = [a for a in answers if a.sent > first_v2]
    before = [a for a in answers if a.version == "1"]
    assert len(after) >= MIN_REQUESTS_EACH_SIDE and len(before) >= MIN_REQUESTS_EACH_SIDE
    assert {a.version for a in after} == {"2"}
    v1_numbers = {a.top_probability for a in before}
    v2_numbers = {a.top_probability for a in answers if a.version == "2"}
    assert len(v1_numbers) == 1 and len(v2_numbers) == 1 and v1_numbers != v2_numbers
    listed = {m["name"]: m for m in httpx.get(f"{served.url}/v1/models", timeout=10).json()
              ["models"]}
    assert listed[THREE]["version"] == "2"
    detail = httpx.get(f"{served.url}/v1/models/{THREE}", timeout=10).json()
    assert detail["model_card"]["version"] == "2"
    assert "model three: loaded from" in wait_for_log(served, "model three: loaded", timeout_s=5)


def test_a_broken_version_is_refused_in_one_log_line_and_the_previous_keeps_serving(
    served: Served,
) -> None:
    serving = served_version(served, THREE)
    broken = served.repository / THREE / str(int(serving) + 1)
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"these are not the bytes of an ONNX model")
    try:
        line = wait_for_log(served, "model three: new files refused", timeout_s=SWITCH_TIMEOUT_S)
        assert f"version {serving} keeps serving" in line
        assert f"version {int(serving) + 1}" in line and "Protobuf parsing failed" in line
        with Client(served.url, max_retries=0) as client:
            for seed in range(5):
                assert client.predict(png(seed), model=THREE).model.version == serving
        ready = httpx.get(f"{served.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
    finally:
        for path in broken.iterdir():
            path.unlink()
        broken.rmdir()


def test_loading_and_unloading_from_outside_need_the_api_key(
    served: Served, launch_gateway: Callable[..., str]
) -> None:
    open_answer = httpx.post(f"{served.url}/v1/models/{TWO}/load", timeout=30)
    assert open_answer.status_code == 403
    assert "model control needs API keys" in open_answer.json()["error"]["message"]

    keyed = launch_gateway(served.grpc_url, wait_for="/readyz", api_keys=KEY,
                           model_repositories=json.dumps([str(served.repository)]))
    assert httpx.post(f"{keyed}/v1/models/{TWO}/unload", timeout=30).status_code == 401
    headers = {"Authorization": f"Bearer {KEY}"}
    loaded = httpx.post(f"{keyed}/v1/models/{TWO}/load", headers=headers, timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["name"] == TWO and loaded.json()["ready"] is True
    missing = httpx.post(f"{keyed}/v1/models/nope/load", headers=headers, timeout=120)
    assert missing.status_code == 409 and "nope" in missing.json()["error"]["message"]
    body = {"inputs": [{"image": base64.b64encode(png(5)).decode()}]}
    answer = httpx.post(f"{keyed}/v1/models/{TWO}/predict", json=body, headers=headers,
                        timeout=30)
    assert answer.status_code == 200 and len(answer.json()["results"][0]["predictions"]) == 2


def test_loading_goes_to_every_replica_up_and_a_gone_one_leaves_the_rotation(
    served: Served, launch_gateway: Callable[..., str], unused_port: Callable[[], int]
) -> None:
    """A gateway over two replicas, the second a port nobody listens on: the load reaches the
    live one and the gone one does not fail it (sending it to every replica known, gone or
    not, answers 503), and a refusal by a live replica is the answer."""
    gone = f"127.0.0.1:{unused_port()}"
    keyed = launch_gateway(f"ipv4:{served.grpc_url},{gone}", wait_for="/readyz", api_keys=KEY,
                           model_repositories=json.dumps([str(served.repository)]))
    headers = {"Authorization": f"Bearer {KEY}"}
    loaded = httpx.post(f"{keyed}/v1/models/{TWO}/load", headers=headers, timeout=120)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["ready"] is True
    ready = httpx.get(f"{keyed}/readyz", timeout=10).json()
    assert (ready["replicas_ready"], ready["replicas"]) == (1, 2)
    missing = httpx.post(f"{keyed}/v1/models/nope/load", headers=headers, timeout=120)
    assert missing.status_code == 409 and "nope" in missing.json()["error"]["message"]
