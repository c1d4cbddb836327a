"""The podman commands `make test-containers` runs for the CPU stack carry the compose files'
options, with the one host-network rewrite: every container port on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest
from compose_files import ComposeError, load_compose
from podman_stack import BASE_ULIMITS, HostNetwork, PodmanStack

ROOT = Path(__file__).resolve().parents[3]
FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.cpu.yml"]
PLAN = HostNetwork({"triton": {8000: 41000, 8001: 41001, 8002: 41002},
                    "gateway": {8080: 41080, 8082: 41082}, "prometheus": {9090: 41090}})


@pytest.fixture
def stack(tmp_path) -> PodmanStack:
    return PodmanStack(load_compose(FILES, env={}), project="p", root=ROOT, work_dir=tmp_path,
                       network=PLAN)


def value(args: list[str], prefix: str) -> list[str]:
    return [arg[len(prefix):] for arg in args if arg.startswith(prefix)]


def test_the_gateway_runs_read_only_with_its_tmpfs_environment_and_mounts(stack):
    args = stack.run_arguments("gateway")
    assert "--read-only" in args and value(args, "--tmpfs=") == ["/tmp"]
    assert "--network=host" in args
    assert set(BASE_ULIMITS) <= set(value(args, "--ulimit="))
    environment = dict(e.split("=", 1) for e in value(args, "--env="))
    assert environment["HETSERVE_PORT"] == "41080" and environment["HETSERVE_HOST"] == "127.0.0.1"
    assert environment["HETSERVE_METRICS_PORT"] == "41082"
    assert environment["HETSERVE_TRITON_GRPC_URL"] == "triton:41001"
    assert value(args, "--volume=") == [f"{ROOT / 'model_repo'}:/models:ro"]
    assert args[args.index("hetserve/gateway:0.1.0") + 1:] == []


def test_triton_listens_on_loopback_at_its_planned_ports_and_is_checked_there(stack):
    command = stack.command("triton")
    assert command[0] == "tritonserver-cpu"
    for flag in ("--http-port=41000", "--grpc-port=41001", "--metrics-port=41002",
                 "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                 "--metrics-address=127.0.0.1"):
        assert flag in command
    assert any("127.0.0.1:41000/v2/health/ready" in part
               for part in stack.health_command("triton"))
    assert "--shm-size=1g" in stack.run_arguments("triton")


def test_services_resolve_to_loopback_and_prometheus_scrapes_the_planned_ports(stack):
    args = stack.run_arguments("prometheus")
    assert {"--add-host=triton:127.0.0.1", "--add-host=gateway:127.0.0.1"} <= set(args)
    assert "--web.listen-address=127.0.0.1:41090" in args
    (config_mount,) = [v for v in value(args, "--volume=") if v.endswith(
        ":/etc/prometheus/prometheus.yml:ro")]
    config = Path(config_mount.split(":")[0]).read_text()
    assert '"gateway:41082"' in config and '"triton:41002"' in config


def test_a_compose_option_without_a_translation_is_refused(stack):
    stack.config["services"]["gateway"]["cap_add"] = ["NET_ADMIN"]
    with pytest.raises(ComposeError, match="cap_add"):
        stack.run_arguments("gateway")
