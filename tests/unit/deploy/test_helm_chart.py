"""The Helm chart under deploy/helm/hetserve, checked offline (no cluster runs here).

Each values file (defaults, production, KServe) renders with the real ``helm`` (installed by
``make setup``: scripts/deploy-tools.sh); every object validates against the Kubernetes
schemas in strict mode (kubernetes-validate, oldest and newest supported versions), objects of
CRD kinds against the CRD schemas committed under deploy/crds/ (unknown fields refused too),
and a kind with neither fails. Structural checks: probes, ports and selectors agree with each
other, with the gateway's settings and routes, and with Triton's ports.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from hetgateway.settings import ENV_PREFIX, GatewaySettings
from hetgateway.triton_replicas import parse_target

REPO_ROOT = Path(__file__).resolve().parents[3]
CHART = REPO_ROOT / "deploy" / "helm" / "hetserve"
CRDS = REPO_ROOT / "deploy" / "crds"
GOLDEN = CHART / "golden"
UPDATE_GOLDEN_ENV = "HETSERVE_UPDATE_GOLDEN"
VALUES_FILES = {"default": None, "production": "values-production.yaml",
                "kserve": "values-kserve.yaml"}
# The optional parts the values files leave off, switched the other way.
OPTIONS = ("triton.modelRepository.pvc.create=true", "apiKeys.keys={k1}", "triton.gpus=0",
           "triton.autoscaling.enabled=false", "gateway.autoscaling.enabled=false",
           "serviceMonitor.enabled=false", "networkPolicy.enabled=false",
           "topologySpread.enabled=false")
RENDERS = {**{name: (values, ()) for name, values in VALUES_FILES.items()},
           "options": (None, OPTIONS)}
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
RELEASE, NAMESPACE = "hs", "ml"
# Read by the gateway's --workers (issue 12's setting); not a GatewaySettings field before it.
TRITON_HEALTH = {"liveness": "/v2/health/live", "readiness": "/v2/health/ready"}


def _helm() -> str:
    local = Path(sys.executable).with_name("helm")
    found = str(local) if local.is_file() else shutil.which("helm")
    if found is None:
        pytest.skip("helm is not installed: run `make setup` (scripts/deploy-tools.sh)")
    return found


@cache
def render_text(values: str | None, *extra: str) -> str:
    """``helm template`` of the chart with ``values`` (and ``--set`` pairs ``extra``)."""
    command = [_helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values:
        command += ["-f", str(CHART / values)]
    for pair in extra:
        command += ["--set", pair]
    return subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache"}).stdout


@cache
def render(values: str | None, *extra: str) -> tuple[dict[str, Any], ...]:
    """Every object the chart renders with ``values`` (and ``--set`` pairs ``extra``)."""
    return tuple(doc for doc in yaml.safe_load_all(render_text(values, *extra)) if doc)


@cache
def crd_schemas() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> a validator of the committed CRD's openAPIV3Schema, made strict."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas = {}
    for path in sorted(CRDS.glob("*.yaml*")):
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" \
            else path.read_text()
        for crd in yaml.load_all(text, Loader=loader):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schemas[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return schemas


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields refused wherever the CRD lists its fields (the API server
    would drop them silently; here they are mistakes)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            if isinstance(value, dict):
                strict(value)
            elif isinstance(value, list):
                for item in value:
                    strict(item)
    return schema


def one(objects: tuple[dict[str, Any], ...], kind: str, name_suffix: str) -> dict[str, Any]:
    found = [o for o in objects
             if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize(("values", "options"), RENDERS.values(), ids=RENDERS.keys())
@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_against_its_schema(values, options, kubernetes) -> None:
    objects = render(values, *options)
    assert objects
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in crd_schemas():
            crd_schemas()[key].validate(obj)
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"no schema for {key}: commit its CRD under deploy/crds/")


@pytest.mark.parametrize("name", VALUES_FILES)
def test_the_render_equals_its_golden_file(name: str) -> None:
    """The rendered manifests are reviewed like code: a change to a template shows here.
    ``HETSERVE_UPDATE_GOLDEN=1`` rewrites the golden files."""
    golden = GOLDEN / f"{name}.yaml"
    rendered = render_text(VALUES_FILES[name])
    if os.environ.get(UPDATE_GOLDEN_ENV) == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"render differs from {golden}"


def test_an_unknown_field_fails_validation() -> None:
    """The checks above can fail: a misspelt field in a core object and in a CRD object."""
    deployment = copy.deepcopy(one(render(None), "Deployment", "-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(one(render(None), "ServiceMonitor", "-gateway"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas()[("monitoring.coreos.com/v1", "ServiceMonitor")].validate(monitor)
    service = copy.deepcopy(one(render("values-kserve.yaml"), "InferenceService", "-triton"))
    service["spec"]["predictor"]["model"]["storageURI"] = "pvc://x"
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas()[("serving.kserve.io/v1beta1", "InferenceService")].validate(service)


def test_the_values_schema_refuses_a_misspelt_value() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        render(None, "triton.replicsa=3")
    assert "replicsa" in failure.value.stderr


def test_the_default_install_holds_every_part_the_deployment_needs() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render(None))
    assert kinds == [
        ("Deployment", "hs-hetserve-gateway"), ("Deployment", "hs-hetserve-triton"),
        ("HorizontalPodAutoscaler", "hs-hetserve-gateway"),
        ("HorizontalPodAutoscaler", "hs-hetserve-triton"),
        ("NetworkPolicy", "hs-hetserve-triton"),
        ("PodDisruptionBudget", "hs-hetserve-gateway"),
        ("PodDisruptionBudget", "hs-hetserve-triton"),
        ("Service", "hs-hetserve-gateway"), ("Service", "hs-hetserve-triton-headless"),
        ("ServiceMonitor", "hs-hetserve-gateway"), ("ServiceMonitor", "hs-hetserve-triton"),
    ]


def test_triton_ports_probes_gpu_and_shared_memory_agree() -> None:
    objects = render(None)
    deployment = one(objects, "Deployment", "-triton")
    triton = container(deployment)
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for name, port in ports.items():
        assert f"--{name}-port={port}" in triton["args"]
    assert "--strict-readiness=true" in triton["args"]
    assert triton["livenessProbe"]["httpGet"] == {"path": TRITON_HEALTH["liveness"],
                                                  "port": "http"}
    for probe in ("readinessProbe", "startupProbe"):
        assert triton[probe]["httpGet"] == {"path": TRITON_HEALTH["readiness"], "port": "http"}
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "persistentVolumeClaim" in volumes[mounts["/models"]]
    assert "--model-repository=/models" in triton["args"]

    headless = one(objects, "Service", "-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == ports
    assert selects(headless["spec"]["selector"], pod_labels(deployment))


def test_the_optional_parts_switch_off_and_on() -> None:
    objects = render(None, *OPTIONS)
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Secret",
                     "Service"]
    triton = one(objects, "Deployment", "-triton")
    assert triton["spec"]["replicas"] == 2
    assert "nvidia.com/gpu" not in container(triton)["resources"]["limits"]
    assert "topologySpreadConstraints" not in triton["spec"]["template"]["spec"]
    claim = one(objects, "PersistentVolumeClaim", "hetserve-models")
    volumes = triton["spec"]["template"]["spec"]["volumes"]
    assert {"claimName": claim["metadata"]["name"], "readOnly": True} in [
        v.get("persistentVolumeClaim") for v in volumes]


def test_object_storage_replaces_the_claim() -> None:
    triton = container(one(render("values-production.yaml"), "Deployment", "-triton"))
    assert "--model-repository=s3://hetserve-models/model_repo_cuda" in triton["args"]
    assert triton["envFrom"] == [{"secretRef": {"name": "hetserve-s3"}}]
    assert "/models" not in {m["mountPath"] for m in triton["volumeMounts"]}


def test_the_gateway_follows_its_settings_and_finds_every_triton_replica() -> None:
    objects = render(None)
    gateway = container(one(objects, "Deployment", "-gateway"))
    env = {item["name"]: item.get("value") for item in gateway["env"]}
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(env) <= fields  # HETSERVE_WORKERS included
    GatewaySettings(**{  # every value the chart sets is one the gateway accepts
        name[len(ENV_PREFIX):].lower(): value for name, value in env.items()
    })
    assert gateway["ports"] == [{"name": "http", "containerPort": int(env["HETSERVE_PORT"]),
                                 "protocol": "TCP"}]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    target = parse_target(env["HETSERVE_TRITON_GRPC_URL"])
    headless = one(objects, "Service", "-triton-headless")
    assert target.dns_name == f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert target.port == next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")


def test_the_gateway_probes_and_metrics_path_are_routes_of_the_app() -> None:
    from hetgateway.routers import health, metrics

    paths = {route.path for router in (health.router, metrics.router) for route in router.routes}
    assert {"/healthz", "/readyz", "/metrics"} <= paths


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_every_selector_selects_the_pods_it_is_for(values) -> None:
    objects = render(values)
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for deployment in deployments.values():
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    for obj in objects:
        spec = obj["spec"]
        if obj["kind"] in ("PodDisruptionBudget",):
            assert any(selects(spec["selector"]["matchLabels"], pod_labels(d))
                       for d in deployments.values()), obj["metadata"]["name"]
        if obj["kind"] == "Service":
            assert any(selects(spec["selector"], pod_labels(d)) for d in deployments.values())
            pods = [d for d in deployments.values() if selects(spec["selector"], pod_labels(d))]
            names = {p["name"] for d in pods for p in container(d)["ports"]}
            assert {p["targetPort"] for p in spec["ports"]} <= names
        if obj["kind"] == "HorizontalPodAutoscaler":
            assert spec["scaleTargetRef"]["name"] in deployments
        if obj["kind"] == "ServiceMonitor":
            matched = [s for s in services.values()
                       if selects(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
            assert len(matched) == 1, obj["metadata"]["name"]
            ports = {p["name"] for p in matched[0]["spec"]["ports"]}
            assert {e["port"] for e in spec["endpoints"]} <= ports


def test_only_the_gateway_and_prometheus_reach_triton() -> None:
    objects = render(None)
    policy = one(objects, "NetworkPolicy", "-triton")["spec"]
    triton = one(objects, "Deployment", "-triton")
    gateway = one(objects, "Deployment", "-gateway")
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(triton))
    assert policy["policyTypes"] == ["Ingress"]
    from_gateway, from_prometheus = policy["ingress"]
    assert selects(from_gateway["from"][0]["podSelector"]["matchLabels"], pod_labels(gateway))
    assert {p["port"] for p in from_gateway["ports"]} == {8001, 8000}
    assert set(from_prometheus["from"][0]) == {"namespaceSelector", "podSelector"}
    assert {p["port"] for p in from_prometheus["ports"]} == {8002}


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_every_container_runs_non_root_read_only_without_capabilities(values) -> None:
    for obj in render(values):
        if obj["kind"] != "Deployment":
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for item in pod["containers"]:
            security = item["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_api_keys_come_from_a_secret_file() -> None:
    objects = render(None, "apiKeys.keys={k1,k2}")
    secret = one(objects, "Secret", "-api-keys")
    deployment = one(objects, "Deployment", "-gateway")
    gateway = container(deployment)
    env = {item["name"]: item.get("value") for item in gateway["env"]}
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "api-keys")
    assert env["HETSERVE_API_KEYS_FILE"] == f"{mount['mountPath']}/keys"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["stringData"]["keys"].split() == ["k1", "k2"]
    production = container(one(render("values-production.yaml"), "Deployment", "-gateway"))
    assert "HETSERVE_API_KEYS_FILE" in {item["name"] for item in production["env"]}
    assert not [o for o in render("values-production.yaml") if o["kind"] == "Secret"]


def test_the_kserve_alternative_replaces_the_triton_deployment() -> None:
    objects = render("values-kserve.yaml")
    assert not [o for o in objects if o["metadata"]["name"].endswith("-triton")
                and o["kind"] in ("Deployment", "HorizontalPodAutoscaler")]
    service = one(objects, "InferenceService", "-triton")
    gateway = container(one(objects, "Deployment", "-gateway"))
    env = {item["name"]: item.get("value") for item in gateway["env"]}
    target = parse_target(env["HETSERVE_TRITON_GRPC_URL"])
    assert target.addresses == (
        f"{service['metadata']['name']}-predictor.{NAMESPACE}.svc.cluster.local:80",)
    policy = one(objects, "NetworkPolicy", "-triton")["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": service["metadata"]["name"]}


def test_the_values_schema_is_json() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    for name in ("values-production.yaml", "values-kserve.yaml"):
        assert set(yaml.safe_load((CHART / name).read_text())) <= set(schema["properties"])
