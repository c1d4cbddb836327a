"""The images of docker-compose.yml and its CPU override, built for real with podman on a
locally made base (docker/base/build-python-base.sh) standing in for the official one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from local_images import PYTHON_BASE, ROOT
from podman_stack import PODMAN


def run(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, "run", "--rm", "--network=none", "--ulimit=nofile=1024:1024",
                           "--ulimit=nproc=1024:1024", image, *command],
                          capture_output=True, text=True, timeout=120, check=False)


def image_config(image: str) -> dict:
    answer = subprocess.run([*PODMAN, "image", "inspect", image], capture_output=True,
                            text=True, check=True)
    return json.loads(answer.stdout)[0]["Config"]


def test_the_local_base_has_the_debian_release_and_python_version_of_the_official_one(
    local_images,
):
    from compose_files import base_images

    (official,) = base_images(ROOT / "server/Dockerfile")  # python:3.11.10-slim-bookworm
    minor, release = re.match(r"python:(\d+\.\d+)\.\d+-slim-(\w+)$", official).groups()
    answer = run(PYTHON_BASE, "sh", "-c",
                 ". /etc/os-release; echo $VERSION_CODENAME; python -c "
                 "'import sys; print(\"%d.%d\" % sys.version_info[:2])'; pip --version")
    assert answer.returncode == 0, answer.stderr
    codename, python, pip = answer.stdout.splitlines()
    assert (codename, python) == (release, minor)
    assert "python 3.11" in pip


@pytest.mark.parametrize("service", ["gateway", "triton", "locust"])
def test_every_built_image_runs_as_a_non_root_user(local_images, compose_config, service):
    image = compose_config["services"][service]["image"]
    user = image_config(image)["User"]
    assert user and user not in ("root", "0")
    answer = run(image, "id", "-u") if service != "locust" else None
    if answer is not None:
        assert answer.returncode == 0 and answer.stdout.strip() != "0", answer


def test_the_gateway_image_holds_the_gateway_and_neither_torch_nor_a_triton_server(
    local_images, compose_config
):
    image = compose_config["services"]["gateway"]["image"]
    answer = run(image, "python", "-c", "import hetgateway, hetcontract; print('ok')")
    assert answer.stdout.strip() == "ok", answer.stderr
    for heavy in ("torch", "pytriton", "onnxruntime"):
        missing = run(image, "python", "-c", f"import {heavy}")
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, heavy


def test_the_cpu_triton_image_holds_the_wheel_tritonserver_and_the_stub_for_its_python(
    local_images, compose_config
):
    image = compose_config["services"]["triton"]["image"]
    answer = run(image, "python3", "-c",
                 "from hetgateway.embedded.triton_process import pytriton_paths as p; "
                 "import onnxruntime, numpy; paths = p(); "
                 "print(paths.tritonserver.is_file(), paths.python_stub.is_file(), "
                 "numpy.__version__.split('.')[0])")
    assert answer.stdout.split() == ["True", "True", "1"], answer.stderr
    assert run(image, "sh", "-c", "command -v tritonserver-cpu").returncode == 0


def test_the_locust_image_carries_the_locustfile_and_pillow(local_images, compose_config):
    image = compose_config["services"]["locust"]["image"]
    answer = subprocess.run(
        [*PODMAN, "run", "--rm", "--network=none", "--ulimit=nofile=1024:1024",
         "--ulimit=nproc=1024:1024", "--entrypoint=python", image, "-c",
         "import locust, PIL, pathlib; print(locust.__version__, "
         "pathlib.Path('/home/locust/locustfile.py').is_file())"],
        capture_output=True, text=True, timeout=120, check=False)
    assert answer.stdout.split() == ["2.32.4", "True"], answer.stderr


def test_the_charts_alert_rules_and_the_compose_prometheus_config_pass_promtool(
    local_images, tmp_path
):
    """promtool (Debian's Prometheus, in the Prometheus stand-in) parses the chart's
    PrometheusRule groups, PromQL included, and the compose stack's Prometheus config."""
    from local_images import PROMETHEUS_STAND_IN

    helm = Path(sys.executable).with_name("helm")
    rendered = subprocess.run(
        [str(helm), "template", "hs", str(ROOT / "deploy/helm/hetserve"), "--api-versions",
         "monitoring.coreos.com/v1", "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True).stdout
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": yaml.safe_load(rendered)["spec"]["groups"]}))
    rules.chmod(0o644)
    config = ROOT / "docker/prometheus/prometheus.yml"
    # the config names its rule files relative to itself: mount its whole folder
    for check, path, mounted in (("rules", rules, rules),
                                 ("config", config, config.parent)):
        target = "/check" if mounted.is_dir() else f"/check/{path.name}"
        answer = subprocess.run(
            [*PODMAN, "run", "--rm", "--network=none", "--ulimit=nofile=1024:1024",
             "--ulimit=nproc=1024:1024", "--entrypoint=promtool",
             f"--volume={mounted}:{target}:ro", PROMETHEUS_STAND_IN, "check", check,
             f"/check/{path.name}"], capture_output=True, text=True, timeout=120, check=False)
        assert answer.returncode == 0, (check, answer.stdout + answer.stderr)
        assert "SUCCESS" in answer.stdout + answer.stderr
