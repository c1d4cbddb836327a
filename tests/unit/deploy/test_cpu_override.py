"""docker-compose.yml, its CPU override (docker-compose.cpu.yml) and the Dockerfiles agree:
ports, paths, users, health checks and base images, read from the files the way Docker
Compose merges them (``compose_files``, the merge `make test-containers` runs)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_files import (
    ComposeError,
    base_images,
    container_ports,
    dockerfile_args,
    load_compose,
    merge,
    read_compose_file,
)

ROOT = Path(__file__).resolve().parents[3]
BASE = ROOT / "docker-compose.yml"
CPU = ROOT / "docker-compose.cpu.yml"
OFFICIAL_BASES = {
    "server/Dockerfile": "python:3.11.10-slim-bookworm",
    "docker/triton/Dockerfile.cpu": "python:3.11.10-slim-bookworm",
    "docker/locust/Dockerfile": "locustio/locust:2.32.4",
    "docker/triton/Dockerfile": "nvcr.io/nvidia/tritonserver:24.10-py3",
}
BUILT = ("triton", "gateway", "locust")


@pytest.fixture(scope="module", params=["gpu", "cpu"])
def stack(request) -> dict[str, Any]:
    files = [BASE] if request.param == "gpu" else [BASE, CPU]
    return load_compose(files, env={})["services"]


@pytest.fixture(scope="module")
def cpu() -> dict[str, Any]:
    return load_compose([BASE, CPU], env={})["services"]


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return load_compose([BASE], env={})["services"]


def dockerfile(service: dict[str, Any]) -> Path:
    return ROOT / service["build"]["context"] / service["build"]["dockerfile"]


def instructions(path: Path, keyword: str) -> list[str]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return re.findall(rf"^{keyword}\s+(.+)$", text, flags=re.MULTILINE)


def health_port(service: dict[str, Any]) -> int:
    (port,) = re.findall(r"127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))
    return int(port)


def flag(command: list[str], name: str) -> str:
    (value,) = [part.split("=", 1)[1] for part in command if part.startswith(f"--{name}=")]
    return value


# The merge itself: Docker Compose's rules for what the files use.

def test_reset_removes_a_key_and_override_replaces_a_list_that_would_merge(tmp_path):
    base = {"services": {"s": {"deploy": {"x": 1}, "volumes": [
        {"type": "bind", "source": "a", "target": "/a"}, {"type": "bind", "source": "b",
                                                          "target": "/b"}]}}}
    (tmp_path / "o.yml").write_text(
        "services:\n  s:\n    deploy: !reset {}\n"
        "    volumes: !override\n      - {type: bind, source: c, target: /a}\n")
    merged = merge(base, read_compose_file(tmp_path / "o.yml", env={}))
    assert merged == {"services": {"s": {"volumes": [
        {"type": "bind", "source": "c", "target": "/a"}]}}}


def test_volumes_merge_by_target_commands_are_replaced_and_unknown_lists_refused():
    base = {"services": {"s": {"command": ["a", "b"], "volumes": [
        {"source": "x", "target": "/m"}, {"source": "y", "target": "/n"}], "dns": ["1"]}}}
    override = {"services": {"s": {"command": ["c"], "volumes": [{"source": "z", "target": "/m"}]}}}
    merged = merge(base, override)["services"]["s"]
    assert merged["command"] == ["c"]
    assert merged["volumes"] == [{"source": "z", "target": "/m"}, {"source": "y", "target": "/n"}]
    with pytest.raises(ComposeError):
        merge(base, {"services": {"s": {"dns": ["2"]}}})


def test_variables_take_the_environment_else_their_default(tmp_path):
    (tmp_path / "c.yml").write_text("a: ${X:-d}\nb: ${Y:-d}\nc: ${Z}\n")
    assert read_compose_file(tmp_path / "c.yml", {"X": "set", "Y": ""}) == \
        {"a": "set", "b": "d", "c": None}


# What the override changes, and what it leaves as docker-compose.yml has it.

def test_the_override_names_only_services_of_docker_compose_yml():
    base = yaml.safe_load(BASE.read_text())["services"]
    override = read_compose_file(CPU, env={})["services"]
    assert set(override) <= set(base)


def test_the_cpu_triton_reserves_no_gpu_and_builds_the_cpu_image(cpu, gpu):
    assert "deploy" in gpu["triton"] and "deploy" not in cpu["triton"]
    assert dockerfile(cpu["triton"]) == ROOT / "docker/triton/Dockerfile.cpu"
    assert cpu["triton"]["image"] != gpu["triton"]["image"]


def test_the_cpu_triton_serves_only_the_cpu_repository_mounted_read_only(cpu):
    triton = cpu["triton"]
    assert triton["command"][0] == "tritonserver-cpu"
    assert flag(triton["command"], "model-repository") == "/models"
    (mount,) = triton["volumes"]
    assert (mount["source"], mount["target"], mount["read_only"]) == ("./model_repo", "/models",
                                                                      True)
    assert (ROOT / "model_repo").is_dir()


def test_the_cpu_triton_keeps_every_tritonserver_flag_but_the_gpu_ones(cpu, gpu):
    gpu_only = {"--model-repository=/models_gpu", "--allow-gpu-metrics=true"}
    kept = set(gpu["triton"]["command"][1:]) - gpu_only
    assert kept <= set(cpu["triton"]["command"][1:])
    assert "--allow-gpu-metrics=false" in cpu["triton"]["command"]


def test_the_cpu_triton_writes_only_to_its_tmpfs_on_a_read_only_root(cpu):
    triton = cpu["triton"]
    assert triton["read_only"] is True and triton["tmpfs"] == ["/tmp"]
    wrapper = (ROOT / "docker/triton/tritonserver_cpu.py").read_text()
    assert 'DEFAULT_WORK_DIR = "/tmp"' in wrapper


def test_the_gateway_reads_model_cards_from_the_repository_triton_serves(stack):
    (mount,) = [v for v in stack["gateway"]["volumes"] if v["target"] == "/models"]
    (triton_mount,) = [v for v in stack["triton"]["volumes"] if v["target"] == "/models"]
    assert mount["source"] == triton_mount["source"] and mount["read_only"] is True
    assert stack["gateway"]["environment"]["HETSERVE_MODEL_REPOSITORIES"] == '["/models"]'


# Ports: Dockerfile EXPOSE, compose ports/expose, the programs' own flags and health checks.

@pytest.mark.parametrize("service", ["triton", "gateway"])
def test_each_image_exposes_the_ports_the_compose_service_uses(stack, service):
    exposed = {int(p) for line in instructions(dockerfile(stack[service]), "EXPOSE")
               for p in line.split()}
    assert exposed == set(container_ports(stack[service]))


def test_triton_listens_where_the_compose_file_and_the_gateway_look(stack):
    command = stack["triton"]["command"]
    ports = {int(flag(command, f"{name}-port")) for name in ("http", "grpc", "metrics")}
    assert ports == set(container_ports(stack["triton"]))
    assert stack["gateway"]["environment"]["HETSERVE_TRITON_GRPC_URL"] == \
        f"triton:{flag(command, 'grpc-port')}"
    assert health_port(stack["triton"]) == int(flag(command, "http-port"))


def test_the_gateway_listens_on_its_published_port_and_is_checked_there(stack):
    gateway = stack["gateway"]
    published = int(gateway["ports"][0].rsplit(":", 1)[1])
    assert int(gateway["environment"]["HETSERVE_PORT"]) == published
    assert set(container_ports(gateway)) == {
        published, int(gateway["environment"]["HETSERVE_METRICS_PORT"])}
    assert health_port(gateway) == published
    assert gateway["environment"]["HETSERVE_HOST"] == "0.0.0.0"


# Users, paths, health-check programs and base images.

def test_every_image_the_project_builds_ends_as_a_non_root_user(stack):
    # The GPU Triton runs as the official NVIDIA image's user; the CPU one is built here.
    ours = [s for s in BUILT if not (s == "triton" and "deploy" in stack["triton"])]
    for service in ours:
        users = instructions(dockerfile(stack[service]), "USER")
        assert users and users[-1] not in ("root", "0"), service
    assert "user" not in stack["triton"] and "user" not in stack["gateway"]


def test_locust_runs_as_root_unless_told_a_user_so_it_can_write_a_results_dir_docker_made():
    raw = yaml.safe_load(BASE.read_text())["services"]["locust"]
    assert raw["user"] == "${HETSERVE_LOAD_USER:-root}"
    (mount,) = [v for v in raw["volumes"] if v["target"] == "/results"]
    assert mount["bind"]["create_host_path"] is True
    assert load_compose([BASE], {"HETSERVE_LOAD_USER": "1000:1000"})["services"]["locust"][
        "user"] == "1000:1000"


@pytest.mark.parametrize("service", ["triton", "gateway"])
def test_health_checks_run_a_python_the_image_has(stack, service):
    program = stack[service]["healthcheck"]["test"][1]
    assert program in ("python", "python3")
    assert any(base.startswith(("python:", "nvcr.io/nvidia/tritonserver:"))
               for base in base_images(dockerfile(stack[service])))


def test_every_copied_path_exists_and_the_build_context_sends_it(stack):
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    allowed = [pattern[1:].rstrip("/") for pattern in ignore if pattern.startswith("!")]
    for service in BUILT:
        context = ROOT / stack[service]["build"]["context"]
        for line in instructions(dockerfile(stack[service]), "COPY"):
            source = line.split()[0]
            assert (context / source).exists(), (service, source)
            if context == ROOT:
                assert any(source.rstrip("/").startswith(a) for a in allowed), (service, source)


def test_the_cpu_command_is_an_executable_the_cpu_image_installs(cpu):
    copies = instructions(dockerfile(cpu["triton"]), "COPY")
    assert "docker/triton/tritonserver_cpu.py /usr/local/bin/tritonserver-cpu" in copies
    mode = subprocess.run(["git", "ls-files", "-s", "docker/triton/tritonserver_cpu.py"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert mode.startswith("100755"), mode
    assert os.access(ROOT / "docker/triton/tritonserver_cpu.py", os.X_OK)


@pytest.mark.parametrize("path, official", OFFICIAL_BASES.items())
def test_every_dockerfile_takes_its_base_as_an_argument_defaulting_to_the_official_image(
    path, official
):
    (base,) = re.findall(r"^FROM\s+(\S+)", (ROOT / path).read_text(), flags=re.MULTILINE)
    (argument,) = re.fullmatch(r"\$\{(\w+)\}", base).groups()
    assert dockerfile_args(ROOT / path)[argument] == official
