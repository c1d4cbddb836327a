"""docker-compose.yml, read with PyYAML: the GPU deployment's structure, as its spec states it.

No Docker engine runs on these machines, so the file is checked, not run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_files import base_images

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
PINNED_TAG = re.compile(r"^[^:@\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def _mount(service: dict[str, Any], target: str) -> dict[str, Any]:
    (mount,) = [v for v in service.get("volumes", []) if v["target"] == target]
    return mount


def test_services_are_triton_gateway_locust_and_monitoring(services):
    assert set(services) == {"triton", "gateway", "locust", "prometheus", "grafana"}


def test_triton_reserves_an_nvidia_gpu(services):
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_triton_serves_the_model_repository_mounted_read_only(services):
    triton = services["triton"]
    assert triton["command"][0] == "tritonserver"
    assert "--model-repository=/models" in triton["command"]
    mount = _mount(triton, "/models")
    assert mount["type"] == "bind" and mount["read_only"] is True
    # the GPU copy written by `make gpu-repo`: ${HETSERVE_MODEL_REPO:-./model_repo_cuda}
    assert mount["source"].endswith("./model_repo_cuda}")


def test_triton_serves_the_fused_head_ensemble_with_the_code_it_imports(services):
    triton = services["triton"]
    assert "--model-repository=/models_gpu" in triton["command"]
    for target, source in [("/models_gpu", "./model_repo_gpu"),
                           ("/opt/hetserve/contract/src", "./contract/src"),
                           ("/opt/hetserve/export/src", "./export/src")]:
        mount = _mount(triton, target)
        assert mount["source"] == source and mount["read_only"] is True
        assert (ROOT / source).is_dir()


def test_triton_has_the_shared_memory_and_ulimits_nvidia_recommends(services):
    triton = services["triton"]
    assert triton["shm_size"] == "1gb"
    assert triton["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert triton["ulimits"]["stack"] == {"soft": 67108864, "hard": 67108864}


def test_triton_is_healthy_only_when_ready(services):
    check = services["triton"]["healthcheck"]
    assert check["test"][0] == "CMD"
    assert any("/v2/health/ready" in part for part in check["test"])
    assert check["retries"] >= 1 and check["start_period"]


def test_triton_publishes_no_port_and_lives_on_the_internal_network(compose, services):
    triton = services["triton"]
    assert "ports" not in triton
    assert set(triton["expose"]) == {"8000", "8001", "8002"}
    assert triton["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True


def test_the_gateway_publishes_its_port_on_loopback_by_default_and_triton_none(services):
    published = {name for name, service in services.items() if service.get("ports")}
    assert "gateway" in published and "triton" not in published and "locust" not in published
    (port,) = services["gateway"]["ports"]
    assert port == "${HETSERVE_BIND:-127.0.0.1}:${HETSERVE_GATEWAY_PORT:-8080}:8080"


def test_the_gateway_serves_metrics_on_an_unpublished_port_of_its_own(services):
    gateway = services["gateway"]
    metrics_port = gateway["environment"]["HETSERVE_METRICS_PORT"]
    assert gateway["expose"] == [metrics_port] and metrics_port != "8080"
    assert not any(port.endswith(f":{metrics_port}") for port in gateway["ports"])


def test_gateway_waits_for_a_healthy_triton_and_talks_to_it_over_grpc(services):
    gateway = services["gateway"]
    assert gateway["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert gateway["environment"]["HETSERVE_TRITON_GRPC_URL"] == "triton:8001"
    assert set(gateway["networks"]) == {"frontend", "backend"}
    assert any("/healthz" in part for part in gateway["healthcheck"]["test"])


def test_gateway_environment_names_are_settings_the_gateway_reads(services):
    from hetgateway.settings import ENV_PREFIX, GatewaySettings

    known = {ENV_PREFIX + name.upper() for name in GatewaySettings.model_fields}
    assert set(services["gateway"]["environment"]) <= known


def test_gateway_is_built_from_server_dockerfile_with_the_repository_as_context(services):
    build = services["gateway"]["build"]
    assert (build["context"], build["dockerfile"]) == (".", "server/Dockerfile")
    assert services["gateway"]["read_only"] is True


def test_locust_runs_only_under_the_load_profile_against_the_gateway(services):
    locust = services["locust"]
    assert locust["profiles"] == ["load"]
    assert "--host=http://gateway:8080" in locust["command"]
    assert "--headless" in locust["command"]
    assert any(arg.startswith("--run-time=") for arg in locust["command"])
    assert locust["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    assert _mount(locust, "/data/fashion-mnist")["read_only"] is True
    assert "profiles" not in services["triton"] and "profiles" not in services["gateway"]


def test_every_service_image_has_a_pinned_tag_and_every_build_an_existing_dockerfile(services):
    for name, service in services.items():
        assert PINNED_TAG.match(service["image"]), f"{name}: image {service['image']!r}"
        assert not service["image"].endswith(":latest")
        if "build" in service:
            build = service["build"]
            dockerfile = ROOT / build["context"] / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    assert all("build" in services[name] for name in ("triton", "gateway", "locust"))


def test_every_base_image_is_pinned_and_triton_is_24_10(services):
    for service in services.values():
        if "build" not in service:
            continue
        build = service["build"]
        bases = base_images(ROOT / build["context"] / build["dockerfile"])
        assert bases, build
        for base in bases:
            assert PINNED_TAG.match(base) and not base.endswith(":latest"), base
    assert base_images(ROOT / "docker/triton/Dockerfile") == [TRITON_IMAGE]


def test_mounted_host_paths_that_ship_with_the_repository_exist(services):
    assert (ROOT / "tests/load/locustfile.py").is_file()
    assert (ROOT / "model_repo").is_dir()


# Monitoring: Prometheus scraping the gateway and Triton, Grafana showing the dashboard.

PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards"
LOOPBACK_PUBLISH = re.compile(r"^(127\.0\.0\.1|\$\{[A-Z_]+:-127\.0\.0\.1\}):")


def _container_ports(service: dict[str, Any]) -> set[str]:
    published = {str(port).rsplit(":", 1)[-1] for port in service.get("ports", [])}
    return published | {str(port) for port in service.get("expose", [])}


def test_prometheus_and_grafana_run_by_default_from_pinned_upstream_images(services):
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana:")):
        service = services[name]
        assert service["image"].startswith(image) and PINNED_TAG.match(service["image"])
        assert "profiles" not in service and "build" not in service


def test_prometheus_reads_the_repository_config_mounted_read_only(services):
    prometheus = services["prometheus"]
    assert f"--config.file={PROMETHEUS_CONFIG}" in prometheus["command"]
    mount = _mount(prometheus, PROMETHEUS_CONFIG)
    assert mount["type"] == "bind" and mount["read_only"] is True
    assert (ROOT / mount["source"]).is_file()


def test_prometheus_shares_a_network_with_every_service_it_scrapes(services):
    prometheus = services["prometheus"]
    config = yaml.safe_load((ROOT / _mount(prometheus, PROMETHEUS_CONFIG)["source"]).read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert {t.split(":")[0] for t in targets} == {"gateway", "triton"}
    for target in targets:
        host, port = target.split(":")
        assert set(services[host]["networks"]) & set(prometheus["networks"]), target
        assert port in _container_ports(services[host]), target


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(services):
    grafana = services["grafana"]
    provisioning = _mount(grafana, GRAFANA_PROVISIONING)
    dashboards = _mount(grafana, GRAFANA_DASHBOARDS)
    assert provisioning["read_only"] is True and dashboards["read_only"] is True
    assert (ROOT / provisioning["source"] / "datasources" / "prometheus.yml").is_file()
    assert (ROOT / dashboards["source"] / "hetserve.json").is_file()
    provider = yaml.safe_load(
        (ROOT / provisioning["source"] / "dashboards" / "hetserve.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == GRAFANA_DASHBOARDS
    datasource = yaml.safe_load(
        (ROOT / provisioning["source"] / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert set(grafana["networks"]) & set(services["prometheus"]["networks"])
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}


def test_grafana_allows_no_anonymous_access_or_sign_up(services):
    environment = services["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_every_published_port_binds_loopback_by_default(services):
    published = {name: service["ports"] for name, service in services.items()
                 if service.get("ports")}
    assert set(published) == {"gateway", "prometheus", "grafana"}
    for name, ports in published.items():
        for port in ports:
            assert LOOPBACK_PUBLISH.match(str(port)), f"{name}: {port}"


def test_named_volumes_keep_the_monitoring_data(compose, services):
    for name, target in (("prometheus", "/prometheus"), ("grafana", "/var/lib/grafana")):
        mount = _mount(services[name], target)
        assert mount["type"] == "volume" and mount["source"] in compose["volumes"]
