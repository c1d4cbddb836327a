"""docker/images.list, the images `make images` builds and `make push` pushes
(scripts/images.sh): every image the compose files and the Helm chart name is on it, built from
the Dockerfile they build it from; the model-repository image has the modelcar layout the chart
and KServe expect; the script's build arguments name the same local base the container tests
build. (Building and pushing for real: tests/containers/test_registry.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from compose_files import dockerfile_args, load_compose

ROOT = Path(__file__).resolve().parents[3]
LIST = ROOT / "docker" / "images.list"
SCRIPT = ROOT / "scripts" / "images.sh"
CHART = ROOT / "deploy" / "helm" / "hetserve"
MODELS_DOCKERFILE = ROOT / "docker" / "models" / "Dockerfile"
GENERATED_CONTEXTS = {"model_repo_cuda"}  # written by `make gpu-repo`, which `make images` runs


def listed() -> dict[str, dict[str, str]]:
    images = {}
    for line in LIST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            image, dockerfile, context, kind = line.split()
            images[image] = {"dockerfile": dockerfile, "context": context, "kind": kind}
    return images


def test_every_listed_image_has_its_dockerfile_a_pinned_tag_and_a_context():
    for image, entry in listed().items():
        assert re.fullmatch(r"hetserve/[a-z0-9-]+:[0-9][\w.]*", image), image
        assert (ROOT / entry["dockerfile"]).is_file()
        assert entry["kind"] in {"cpu", "gpu"}
        assert (ROOT / entry["context"]).is_dir() or entry["context"] in GENERATED_CONTEXTS


@pytest.mark.parametrize("files", [["docker-compose.yml"],
                                   ["docker-compose.yml", "docker-compose.cpu.yml"]],
                         ids=["gpu", "cpu"])
def test_the_compose_files_build_the_listed_images_from_the_same_dockerfiles(files):
    services = load_compose([ROOT / name for name in files], env={})["services"]
    images = listed()
    for name, service in services.items():
        if "build" not in service or name == "locust":  # the load generator is compose's own
            continue
        entry = images[service["image"]]
        built_from = Path(service["build"]["context"]) / service["build"]["dockerfile"]
        assert (ROOT / built_from).resolve() == (ROOT / entry["dockerfile"]).resolve()
        assert (ROOT / service["build"]["context"]).resolve() == (ROOT / entry["context"]).resolve()


def chart_values(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text())


@pytest.mark.parametrize("values", ["values.yaml", "values-cpu.yaml"])
def test_the_charts_hetserve_images_are_listed(values):
    defaults = chart_values("values.yaml")
    override = chart_values(values)
    images = listed()
    gateway = defaults["gateway"]["image"]
    models = {**defaults["triton"]["modelRepository"]["image"],
              **override.get("triton", {}).get("modelRepository", {}).get("image", {})}
    triton = {**defaults["triton"]["image"], **override.get("triton", {}).get("image", {})}
    for image in (gateway, models, triton):
        if image.get("registry") == "nvcr.io":  # NVIDIA's own Triton image
            continue
        assert f"{image['repository']}:{image['tag']}" in images


def test_the_model_image_holds_the_repository_under_models_as_kserve_modelcars_expect():
    text = MODELS_DOCKERFILE.read_text()
    assert re.search(r"^COPY \. /models/$", text, flags=re.MULTILINE)
    assert chart_values("values.yaml")["triton"]["modelRepository"]["image"]["path"] == "/models"
    models = [e for i, e in listed().items() if i.startswith("hetserve/models")]
    assert {e["context"] for e in models} == {"model_repo", "model_repo_cuda"}
    assert {e["dockerfile"] for e in models} == {"docker/models/Dockerfile"}


def test_the_script_builds_on_the_local_base_the_container_tests_build():
    from local_images import BASE_ARGS, PYTHON_BASE

    script = SCRIPT.read_text()
    assert f"LOCAL_PYTHON_BASE={PYTHON_BASE}" in script
    for dockerfile in {ROOT / e["dockerfile"] for e in listed().values() if e["kind"] == "cpu"}:
        for name in dockerfile_args(dockerfile):
            if name.endswith("_IMAGE"):
                assert name in BASE_ARGS, (dockerfile, name)
                assert f"--build-arg={name}=$LOCAL_PYTHON_BASE" in script


def test_make_images_and_make_push_run_the_script():
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "images", "push", "REGISTRY=r:5000"],
                         capture_output=True, text=True, check=True).stdout
    assert "bash scripts/images.sh build" in dry
    assert "bash scripts/images.sh push r:5000" in dry
    refused = subprocess.run(["make", "-s", "-C", str(ROOT), "push"], capture_output=True,
                             text=True, check=False)
    assert refused.returncode != 0 and "usage: make push REGISTRY=host:port" in refused.stderr
    bad = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "usage" in bad.stderr
