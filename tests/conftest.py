"""Shared fixtures: the real embedded Triton and the gateway on free loopback ports.

Session fixtures (started once, stopped at the end of the session, whatever happens):

- ``model_repository`` -> Path: the shipped ``model_repo/`` (or
  ``$HETSERVE_TEST_MODEL_REPOSITORY``); tests that need served models skip with a clear
  message when it holds none.
- ``triton_server`` -> ``TritonServer``: the embedded Triton (Python backend running ONNX
  Runtime) serving a repository derived from ``model_repository``; ``.grpc_url``,
  ``.http_url``, ``.metrics_url`` are ``host:port``; ``.models`` the served model names.
- ``gateway_url`` -> str: ``http://127.0.0.1:<port>`` of a gateway process (``hetgateway
  gateway``) in front of ``triton_server``, ready (``/readyz`` 200) before tests run.
- ``fashion_mnist`` -> ``FashionMnist``: the real Fashion-MNIST test images (uint8
  [N, 28, 28]) and labels.

Function-scoped factories for tests that need their own servers (for example to stop
Triton under a running gateway); everything they start is stopped at the test's end:

- ``launch_triton()`` -> ``TritonServer`` on fresh ports (``.stop()``, ``.start()`` again on
  the same ports).
- ``launch_gateway(triton_grpc_url, **settings)`` -> str URL of a new gateway process;
  keyword arguments become ``HETSERVE_<NAME>`` environment variables.
- ``launch_gateway_process(triton_grpc_url, python=..., **settings)`` -> the
  ``GatewayProcess`` itself (``.url``, ``.pid``, ``.signal()``, ``.wait()``), for tests that
  signal it or look at its worker processes; ``python`` runs it with another interpreter
  (another virtualenv).

Session-scoped factories for module-scoped fixtures: ``start_triton([repository, ...])`` and
``start_gateway(triton_grpc_url, **settings)`` (ready; stopped at the session's end at the
latest). ``decisions_stack`` -> ``DecisionsStack``: calibrated copies of the shipped models on a
stack of their own (the decisions' end-to-end and browser tests).

And ``unused_port()`` -> int, a TCP port free on loopback right now; ``loopback_dns`` ->
``LoopbackDns`` (``bench/loopback_dns.py``), a DNS server on loopback whose records the test
sets (``.set(name, addresses)``, ``.address`` for a ``dns://ADDRESS/name:port`` target);
``bench_module(name)`` -> a module of ``bench/`` that tests share with the benchmarks.

Prerequisites: a test that cannot run without something the installer provides (Fashion-MNIST,
Chromium, Playwright) skips with a reason starting ``prerequisite missing:``. Under ``CI=true``
such a skip is reported as a failure instead: CI must not go green while testing less.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hetcontract import MODEL_CARD_FILENAME, MODEL_CARD_PARAMETER, ModelCard
from hetgateway.embedded import TritonPorts, TritonProcess, build_backend_dir, derive_repository

if TYPE_CHECKING:
    from hetexport.onnx.runner import OnnxRunner
    from loopback_dns import LoopbackDns

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY_ENV = "HETSERVE_TEST_MODEL_REPOSITORY"
TRITON_READY_TIMEOUT_S = 240.0
GATEWAY_READY_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.1
PREREQUISITE_MISSING = "prerequisite missing:"
"""How a skip reason starts when the test lacks what `make setup` installs (see module doc)."""


@dataclass(frozen=True)
class FashionMnist:
    """Fashion-MNIST test split: ``images`` uint8 [N, 28, 28], ``labels`` int64 [N]."""

    images: np.ndarray
    labels: np.ndarray


class TritonServer:
    """A running embedded Triton for tests, restartable on the same ports."""

    def __init__(self, workdir: Path, sources: list[Path]) -> None:
        derived = derive_repository(sources, workdir / "repo")
        self.models = derived.models
        self.derived_repository = derived.path
        self.source_repositories = sources
        self.process = TritonProcess(
            [derived.path],
            ports=TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port()),
            backend_dir=build_backend_dir(workdir / "backends"),
            log_path=workdir / "triton.log",
        )

    @property
    def grpc_url(self) -> str:
        return self.process.grpc_url

    @property
    def http_url(self) -> str:
        return self.process.http_url

    @property
    def metrics_url(self) -> str:
        return self.process.metrics_url

    def start(self) -> None:
        """Start and wait until every model is ready."""
        self.process.start()
        self.process.wait_ready(timeout_s=TRITON_READY_TIMEOUT_S)

    def stop(self) -> None:
        self.process.stop()


class GatewayProcess:
    """``hetgateway gateway`` in a subprocess (its own session and process group), in front of
    a given Triton; one worker unless ``workers=`` says otherwise."""

    def __init__(self, triton_grpc_url: str, log_path: Path, *, python: str = sys.executable,
                 **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HETSERVE_WORKERS="1", HETSERVE_DRAIN_S="0")  # a test may drain
        env.update({f"HETSERVE_{key.upper()}": str(value) for key, value in settings.items()})
        env.update(HETSERVE_TRITON_GRPC_URL=triton_grpc_url, HETSERVE_PORT=str(self.port),
                   HETSERVE_HOST="127.0.0.1", HETSERVE_LOG_LEVEL="warning")
        self._log = open(log_path, "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [python, "-m", "hetgateway.cli", "gateway"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._log_path = log_path

    @property
    def pid(self) -> int:
        return self._process.pid

    def signal(self, signum: int) -> None:
        self._process.send_signal(signum)

    def wait(self, *, timeout_s: float) -> int:
        """The exit status, once the process has ended (``subprocess.TimeoutExpired`` after
        ``timeout_s``)."""
        return self._process.wait(timeout=timeout_s)

    def wait_until(self, path: str, *, timeout_s: float = GATEWAY_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self._log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"gateway {path} not 200 in {timeout_s} s")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)  # its workers too
                self._process.wait()
        self._log.close()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def served_model_dirs(repository: Path) -> list[Path]:
    """Model directories (those holding a ``config.pbtxt`` and a model card) of a repository."""
    if not repository.is_dir():
        return []
    return sorted(
        p for p in repository.iterdir()
        if (p / "config.pbtxt").is_file() and (p / MODEL_CARD_FILENAME).is_file()
    )


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI a skip for a missing prerequisite is a failure (see module doc)."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if PREREQUISITE_MISSING in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true and {reason.removeprefix('Skipped: ')}"


@pytest.fixture(scope="session")
def unused_port() -> Callable[[], int]:
    return free_port


def load_bench_module(name: str) -> ModuleType:
    """A module of ``bench/`` (shared with the benchmarks), imported from its file."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(REPO_ROOT / "bench"))  # its siblings, as when run as a script
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    return module


@pytest.fixture(scope="session")
def bench_module() -> Callable[[str], ModuleType]:
    """``bench_module(name)``: a module of ``bench/`` shared with the benchmarks."""
    return load_bench_module


@pytest.fixture
def loopback_dns() -> Iterator[LoopbackDns]:
    with load_bench_module("loopback_dns").LoopbackDns() as server:
        yield server


@pytest.fixture(scope="session")
def model_repository() -> Path:
    repository = Path(os.environ.get(MODEL_REPOSITORY_ENV, REPO_ROOT / "model_repo"))
    if not served_model_dirs(repository):
        pytest.skip(f"no models in {repository}: run `make models` first")
    return repository


@pytest.fixture(scope="session")
def model_cards(model_repository: Path) -> dict[str, ModelCard]:
    """The model cards of the served models, by name."""
    return {
        d.name: ModelCard.model_validate_json((d / MODEL_CARD_FILENAME).read_text())
        for d in served_model_dirs(model_repository)
    }


@pytest.fixture(scope="session")
def triton_server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    server = TritonServer(tmp_path_factory.mktemp("triton"), [model_repository])
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gateway_url(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    gateway = GatewayProcess(
        triton_server.grpc_url, log,
        model_repositories=f'["{triton_server.source_repositories[0]}"]',
    )
    try:
        gateway.wait_until("/readyz")
        yield gateway.url
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
def fashion_mnist() -> FashionMnist:
    # hetexport.data imports torch: only here, not at conftest import
    from hetexport.data import DEFAULT_FASHION_MNIST_DIR, read_idx

    images_path = DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not images_path.is_file():
        pytest.skip(f"{PREREQUISITE_MISSING} Fashion-MNIST not installed at "
                    f"{DEFAULT_FASHION_MNIST_DIR} (make setup)")
    return FashionMnist(
        images=read_idx(images_path),
        labels=read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64),
    )


@pytest.fixture
def launch_triton(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], TritonServer]]:
    started: list[TritonServer] = []

    def launch() -> TritonServer:
        server = TritonServer(tmp_path_factory.mktemp("triton-own"), [model_repository])
        started.append(server)
        server.start()
        return server

    try:
        yield launch
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def start_triton(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[list[Path]], TritonServer]]:
    """``start_triton([repository, ...])``: an embedded Triton over other repositories than the
    shipped one (for module-scoped fixtures), ready; stopped at the end of the session if the
    caller did not stop it first."""
    started: list[TritonServer] = []

    def start(sources: list[Path]) -> TritonServer:
        server = TritonServer(tmp_path_factory.mktemp("triton-sources"), sources)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def start_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., GatewayProcess]]:
    """``start_gateway(triton_grpc_url, **settings)``: a gateway process for module-scoped
    fixtures, ready (``/readyz``); stopped at the end of the session if the caller did not
    stop it first."""
    started: list[GatewayProcess] = []

    def start(triton_grpc_url: str, **settings: object) -> GatewayProcess:
        gateway = GatewayProcess(
            triton_grpc_url, tmp_path_factory.mktemp("gateway-module") / "gateway.log",
            **settings)
        started.append(gateway)
        gateway.wait_until("/readyz")
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


@dataclass(frozen=True)
class DecisionsStack:
    """Copies of the shipped models calibrated by the exporter's own code, served by a Triton
    and a two-worker gateway of their own (``decisions_stack``): ``het_clean`` calibrated on
    the clean test images ``0 .. calibration_images - 1``, ``het_noisy`` and ``det_noisy`` as
    the demo's export calibrates (its held-out noisy labels), ``det_plain`` without a
    calibration. Each worker's accuracy window holds ``window_images`` images."""

    url: str
    repository: Path
    calibration_images: int
    window_images: int

    def card(self, model: str) -> ModelCard:
        return ModelCard.model_validate_json(
            (self.repository / model / MODEL_CARD_FILENAME).read_text())


DECISIONS_CALIBRATION_IMAGES = 5000
DECISIONS_WINDOW_IMAGES = 4 * (10_000 - DECISIONS_CALIBRATION_IMAGES)
"""Room for the held-out clean images once per calibrated coverage, in each worker."""


@pytest.fixture(scope="session")
def decisions_stack(
    model_repository: Path, fashion_mnist: FashionMnist,
    tmp_path_factory: pytest.TempPathFactory, start_triton: Callable[..., TritonServer],
    start_gateway: Callable[..., GatewayProcess],
) -> Iterator[DecisionsStack]:
    # hetexport imports torch: only here, not at conftest import
    from hetexport.calibration import CalibrationSet
    from hetexport.calibration.recalibrate import recalibrate_model
    from hetexport.data import DEFAULT_FASHION_MNIST_DIR
    from hetexport.label_noise import DEFAULT_NOISE_RATE
    from hetexport.repo.pbtxt import parse_config, render_config
    from hetexport.studies.demo import demo_calibration
    from hetexport.training.experiment import prepare_fashion_mnist

    root = tmp_path_factory.mktemp("decisions") / "repo"
    sources = {"het_clean": "fashion_het", "het_noisy": "fashion_het",
               "det_noisy": "fashion_det", "det_plain": "fashion_det"}
    for name, source in sources.items():
        target = root / name
        shutil.copytree(model_repository / source, target)
        card = json.loads((target / MODEL_CARD_FILENAME).read_text())
        card.pop("calibration", None)
        card["name"] = name
        (target / MODEL_CARD_FILENAME).write_text(json.dumps(card, indent=2))
        config = dataclasses.replace(parse_config((target / "config.pbtxt").read_text()),
                                     name=name)
        (target / "config.pbtxt").write_text(render_config(
            config.with_parameter(MODEL_CARD_PARAMETER, json.dumps(card))))
    spec = ModelCard.model_validate_json((root / "het_clean" / MODEL_CARD_FILENAME).read_text()
                                         ).input
    count = DECISIONS_CALIBRATION_IMAGES
    pixels = fashion_mnist.images[:count, None].astype(np.float32)
    recalibrate_model(root / "het_clean", CalibrationSet(
        images=(pixels / spec.scale - spec.mean[0]) / spec.std[0],
        labels=fashion_mnist.labels[:count], label_source="clean",
        source=f"Fashion-MNIST test images 0..{count - 1}"))
    demo = prepare_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, noise_rate=DEFAULT_NOISE_RATE)
    for name in ("het_noisy", "det_noisy"):
        recalibrate_model(root / name, demo_calibration(demo, noise_rate=DEFAULT_NOISE_RATE))
    triton = start_triton([root])
    gateway = start_gateway(triton.grpc_url, workers=2,
                            accuracy_window_images=DECISIONS_WINDOW_IMAGES,
                            model_repositories=f'["{root}"]')
    try:
        yield DecisionsStack(gateway.url, root, count, DECISIONS_WINDOW_IMAGES)
    finally:
        gateway.stop()
        triton.stop()


@pytest.fixture
def launch_gateway_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def launch(
        triton_grpc_url: str, *, wait_for: str = "/healthz", python: str = sys.executable,
        **settings: object
    ) -> GatewayProcess:
        gateway = GatewayProcess(
            triton_grpc_url, tmp_path_factory.mktemp("gateway-own") / "gateway.log",
            python=python, **settings
        )
        started.append(gateway)
        gateway.wait_until(wait_for)
        return gateway

    try:
        yield launch
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def launch_gateway(
    launch_gateway_process: Callable[..., GatewayProcess],
) -> Callable[..., str]:
    def launch(triton_grpc_url: str, *, wait_for: str = "/healthz", **settings: object) -> str:
        return launch_gateway_process(triton_grpc_url, wait_for=wait_for, **settings).url

    return launch


class OnnxReference:
    """ONNX Runtime run in the test process on the shipped ``model.onnx`` files: what the
    served answers must equal for the same preprocessed tensor."""

    def __init__(self, repository: Path, cards: dict[str, ModelCard]) -> None:
        self._repository = repository
        self.cards = cards
        self._runners: dict[str, OnnxRunner] = {}

    def tensor(self, model: str, images: np.ndarray) -> np.ndarray:
        """uint8 grey images [N, H, W] at the model's size -> float32 [N, C, H, W] per the
        card: ``(pixel / scale - mean) / std`` (written out here, independent of the gateway)."""
        spec = self.cards[model].input
        channels = spec.shape[0]
        pixels = np.repeat(images[:, None].astype(np.float32), channels, axis=1)
        mean = np.asarray(spec.mean, np.float32)[None, :, None, None]
        std = np.asarray(spec.std, np.float32)[None, :, None, None]
        return ((pixels / np.float32(spec.scale) - mean) / std).astype(np.float32)

    def run(self, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output for the float32 [N, C, H, W] batch, by name."""
        # hetexport imports torch: only here, not at conftest import
        from hetexport.onnx.runner import OnnxRunner

        if model not in self._runners:
            self._runners[model] = OnnxRunner(self._repository / model / "1" / "model.onnx")
        return self._runners[model].run(batch)


@pytest.fixture(scope="session")
def onnx_reference(model_repository: Path, model_cards: dict[str, ModelCard]) -> OnnxReference:
    return OnnxReference(model_repository, model_cards)
