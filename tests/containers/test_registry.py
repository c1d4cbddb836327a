"""hetserve's images through a real registry: `make images` (scripts/images.sh build) builds the
gateway, CPU Triton and model-repository images (and skips the GPU Triton where its base image
cannot be had), `make push` (scripts/images.sh push) pushes them to Debian's docker-registry on
loopback, they are pulled back by digest into an empty image store, the model image is copied
out by the chart's own init-container command, and the CPU stack runs from the pulled images on
those models, answering what `make serve` answers."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from answers import assert_same_answers
from local_images import ROOT
from podman_stack import BASE_ULIMITS, PODMAN, PodmanStack
from registry import LocalRegistry

IMAGES_SCRIPT = ROOT / "scripts" / "images.sh"
IMAGES_LIST = ROOT / "docker" / "images.list"
CPU_IMAGES = ("hetserve/gateway:0.1.0", "hetserve/triton-cpu:0.1.0", "hetserve/models:0.1.0")
GPU_IMAGE = "hetserve/triton:24.10"
STACK = ("triton", "gateway")
SCRIPT_TIMEOUT_S = 1800
PULL_TIMEOUT_S = 600
STACK_READY_TIMEOUT_S = 300.0
IMAGES_PER_REQUEST = 4


def images_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", str(IMAGES_SCRIPT), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def helm() -> str:
    return str(Path(sys.executable).with_name("helm"))


@pytest.fixture(scope="module")
def built(local_images) -> str:
    """`make images`' build, on the local Debian base (no registry serves the official bases
    here); after `local_images`, so podman's layer cache has most of it."""
    return images_script("build", env={"BASE": "local"}).stdout


@pytest.fixture(scope="module")
def registry(container_tests_enabled, tmp_path_factory) -> Iterator[LocalRegistry]:
    """The registry, stopped and its storage (the pushed layers) removed at the end."""
    work_dir = tmp_path_factory.mktemp("registry")
    try:
        with LocalRegistry(work_dir) as running:
            yield running
    finally:
        shutil.rmtree(work_dir / "storage", ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(built, registry, tmp_path_factory) -> dict[str, str]:
    """`make push REGISTRY=<loopback registry>`: pushed image -> its digest."""
    digests = tmp_path_factory.mktemp("push") / "digests.txt"
    images_script("push", registry.address,
                  env={"TLS_VERIFY": "false", "DIGESTS_FILE": str(digests)})
    return dict(line.split() for line in digests.read_text().splitlines())


@pytest.fixture(scope="module")
def empty_store(container_tests_enabled, tmp_path_factory) -> Iterator[tuple[str, ...]]:
    """podman on an image store of its own (``--root``), empty at first, so that every layer
    of a pulled image comes from the registry; removed at the end."""
    root = tmp_path_factory.mktemp("store")
    podman = (*PODMAN, "--root", str(root / "storage"), "--runroot", str(root / "run"))
    try:
        yield podman
    finally:
        for cleanup in (["rm", "--all", "--force"], ["rmi", "--all", "--force"]):
            subprocess.run([*podman, *cleanup], capture_output=True, timeout=300, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pulled(pushed, empty_store) -> dict[str, str]:
    """Every pushed image pulled back by digest: local image name -> the reference pulled."""
    listed = subprocess.run([*empty_store, "images", "--quiet"], capture_output=True, text=True,
                            check=True)
    assert listed.stdout.strip() == ""
    references = {}
    for target, digest in pushed.items():
        reference = f"{target.rsplit(':', 1)[0]}@{digest}"
        pull = subprocess.run([*empty_store, "pull", "--quiet", "--tls-verify=false", reference],
                              capture_output=True, text=True, timeout=PULL_TIMEOUT_S, check=False)
        assert pull.returncode == 0, pull.stderr
        references[target.split("/", 1)[1]] = reference
    return references


def chart_cpu_triton_pod() -> dict[str, Any]:
    """The Triton pod of the chart's CPU values, rendered."""
    rendered = subprocess.run(
        [helm(), "template", "hs", str(ROOT / "deploy/helm/hetserve"), "-f",
         str(ROOT / "deploy/helm/hetserve/values-cpu.yaml"), "--show-only",
         "templates/triton-deployment.yaml"], capture_output=True, text=True, check=True)
    return yaml.safe_load(rendered.stdout)["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def chart_models(pulled, empty_store, tmp_path_factory) -> Path:
    """The model repository as the chart's init container leaves it in its emptyDir: the
    rendered init container (command, user, read-only root) run on the pulled model image."""
    pod = chart_cpu_triton_pod()
    (init,) = pod["initContainers"]
    (mount,) = init["volumeMounts"]
    empty_dir = tmp_path_factory.mktemp("emptydir")
    user, group = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    os.chown(empty_dir, user, group)  # what the kubelet's fsGroup does for an emptyDir
    assert init["image"] == "hetserve/models:0.1.0"
    done = subprocess.run(
        [*empty_store, "run", "--rm", "--network=none", "--read-only", "--cap-drop=all",
         "--security-opt=no-new-privileges", f"--user={user}:{group}",
         *(f"--ulimit={limit}" for limit in BASE_ULIMITS),
         f"--volume={empty_dir}:{mount['mountPath']}", "--entrypoint", init["command"][0],
         pulled[init["image"]], *init["command"][1:]],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return empty_dir


@pytest.fixture(scope="module")
def pulled_stack(pulled, empty_store, chart_models, compose_config_with,
                 tmp_path_factory) -> Iterator[PodmanStack]:
    """triton and gateway of the CPU compose stack, from the pulled images, Triton serving the
    models the chart's init command copied out of the pulled model image."""
    config = compose_config_with(HETSERVE_MODEL_REPO=str(chart_models))
    stack = PodmanStack(config, project=f"hetserve-pulled-{uuid.uuid4().hex[:8]}", root=ROOT,
                        work_dir=tmp_path_factory.mktemp("pulled-stack"), images=pulled,
                        ready_timeout_s=STACK_READY_TIMEOUT_S, podman=empty_store)
    try:
        stack.up(STACK)
        yield stack
    finally:
        stack.down()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_make_images_builds_the_cpu_images_and_skips_what_cannot_be_built_here(built):
    listed = [line.split()[0] for line in IMAGES_LIST.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    for image in CPU_IMAGES:
        assert f"built {image} in" in built
    for image in listed:  # each image is built or skipped with the reason
        assert f"built {image} in" in built or f"skipped {image}: " in built
    if shutil.which("nvidia-smi") is None:
        assert f"skipped {GPU_IMAGE}: needs nvcr.io/nvidia/tritonserver" in built


def test_make_push_pushes_every_built_image_and_the_registry_serves_it_by_digest(
    pushed, registry
):
    names = {target.split("/", 1)[1] for target in pushed}
    assert set(CPU_IMAGES) <= names
    assert {name.rsplit(":", 1)[0] for name in names} <= set(registry.catalog())
    for target, digest in pushed.items():
        repository, tag = target.split("/", 1)[1].rsplit(":", 1)
        assert digest.startswith("sha256:")
        assert registry.manifest_digest(repository, tag) == digest
        assert registry.manifest_digest(repository, digest) == digest


def test_each_image_is_pulled_back_by_digest_into_an_empty_store(pulled, pushed, empty_store):
    for reference in pulled.values():
        inspected = subprocess.run([*empty_store, "image", "inspect", "--format",
                                    "{{.Digest}} {{json .RepoDigests}}", reference],
                                   capture_output=True, text=True, check=True).stdout
        digest, repo_digests = inspected.split(" ", 1)
        assert digest == reference.rsplit("@", 1)[1]
        assert reference in repo_digests
    listed = subprocess.run([*empty_store, "images", "--quiet", "--no-trunc"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert len(set(listed)) == len(pushed)  # nothing but what was pulled


def test_the_charts_init_command_copies_the_model_repository_out_of_the_pulled_image(
    chart_models,
):
    assert tree(chart_models) == tree(ROOT / "model_repo")


def test_the_cpu_stack_runs_from_the_pulled_images(pulled_stack, pulled, empty_store):
    for service in STACK:
        image = pulled_stack.image(service)
        assert image == pulled[pulled_stack.services[service]["image"]]
        expected_id = subprocess.run([*empty_store, "image", "inspect", "--format", "{{.Id}}",
                                      image], capture_output=True, text=True,
                                     check=True).stdout.strip()
        assert pulled_stack.inspect(service)["Image"] == expected_id


def test_the_stack_from_the_registry_answers_what_make_serve_answers(
    pulled_stack, make_serve_url, fashion_mnist
):
    gateway = pulled_stack.url("gateway", 8080)
    assert httpx.get(f"{gateway}/readyz", timeout=5).status_code == 200
    assert_same_answers(gateway, make_serve_url, fashion_mnist.images[:IMAGES_PER_REQUEST],
                        "fashion_het")


def test_the_pulled_gateway_serves_metrics_on_its_metrics_port_only(pulled_stack):
    gateway, metrics = pulled_stack.url("gateway", 8080), pulled_stack.url("gateway", 8082)
    assert httpx.get(f"{gateway}/metrics", timeout=5).status_code == 404
    scrape = httpx.get(f"{metrics}/metrics", timeout=5)
    assert scrape.status_code == 200 and "hetserve_http_requests_total" in scrape.text
