"""The Helm chart under deploy/helm/hetserve, checked offline (no cluster runs here).

Each values file (defaults, production, KServe, CPU) and the options they leave off render with
the real ``helm`` (installed by ``make setup``: scripts/deploy-tools.sh); every object validates
against the Kubernetes schemas in strict mode (kubernetes-validate, oldest and newest supported
versions), objects of CRD kinds against the CRD schemas under deploy/crds/ (unknown fields
refused too), and a kind with neither fails. On a plain cluster (no Prometheus Operator: Helm's
``.Capabilities`` without ``monitoring.coreos.com/v1``) the defaults render no object of a CRD
kind; with the API announced the ServiceMonitors and alerts come back. Structural checks:
probes, ports and selectors agree with each other, with the gateway's settings and routes, and
with Triton's ports; shutdown hooks and grace periods; the model repository's sources.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
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
DASHBOARD = CHART / "dashboards" / "hetserve.json"
UPDATE_GOLDEN_ENV = "HETSERVE_UPDATE_GOLDEN"
VALUES_FILES = {"default": None, "production": "values-production.yaml",
                "kserve": "values-kserve.yaml", "cpu": "values-cpu.yaml"}
MONITORING_API = "monitoring.coreos.com/v1"
# The optional parts the values files leave off, switched the other way.
OPTIONS = ("triton.modelRepository.source=pvc", "triton.modelRepository.pvc.create=true",
           "apiKeys.keys={k1}", "triton.gpus=0", "triton.autoscaling.enabled=false",
           "gateway.autoscaling.enabled=false", "serviceMonitor.enabled=false",
           "prometheusRule.enabled=false", "networkPolicy.enabled=false",
           "topologySpread.enabled=false", "serviceAccount.create=false", "tests.enabled=false")
GCS = ("triton.modelRepository.source=gcs", "triton.modelRepository.gcs.uri=gs://b/repo",
       "triton.modelRepository.gcs.credentialsSecret=gcs-key")
IMAGE_VOLUME = ("triton.modelRepository.source=imageVolume",)
# name -> (values file, --set pairs, --kube-version, --api-versions, Kubernetes versions to
# validate against: image volumes exist from 1.31, so that render is checked on the newest).
LATEST = kubernetes_validate.latest_version()
KUBERNETES_VERSIONS = ("1.25.0", LATEST)
RENDERS = {
    **{name: (values, (), None, (), KUBERNETES_VERSIONS) for name, values in VALUES_FILES.items()},
    "options": (None, OPTIONS, None, (), KUBERNETES_VERSIONS),
    "gcs": (None, GCS, None, (), KUBERNETES_VERSIONS),
    "monitoring": (None, ("grafanaDashboard.enabled=true",), None, (MONITORING_API,),
                   KUBERNETES_VERSIONS),
    "image-volume": (None, IMAGE_VOLUME, "1.31.0", (), (LATEST,)),
}
RELEASE, NAMESPACE = "hs", "ml"
TRITON_HEALTH = {"liveness": "/v2/health/live", "readiness": "/v2/health/ready"}
BUILT_IN_GROUPS = {"v1", "apps/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"}


def _helm() -> str:
    local = Path(sys.executable).with_name("helm")
    found = str(local) if local.is_file() else shutil.which("helm")
    if found is None:
        pytest.skip("helm is not installed: run `make setup` (scripts/deploy-tools.sh)")
    return found


def helm_template(values: str | None = None, sets: tuple[str, ...] = (), *,
                  kube: str | None = None, api_versions: tuple[str, ...] = (),
                  chart: Path = CHART, show_only: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart; ``kube`` is --kube-version (the cluster's version Helm
    assumes), ``api_versions`` what the cluster is said to serve (--api-versions)."""
    command = [_helm(), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    if show_only:
        command += ["--show-only", show_only]
    if values:
        command += ["-f", str(chart / values)]
    for pair in sets:
        command += ["--set", pair]
    if kube:
        command += ["--kube-version", kube]
    for api in api_versions:
        command += ["--api-versions", api]
    return subprocess.run(command, capture_output=True, text=True, check=check,
                          env={**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache"})


@cache
def render_text(values: str | None = None, sets: tuple[str, ...] = (), kube: str | None = None,
                api_versions: tuple[str, ...] = ()) -> str:
    return helm_template(values, sets, kube=kube, api_versions=api_versions).stdout


@cache
def render(values: str | None = None, sets: tuple[str, ...] = (), kube: str | None = None,
           api_versions: tuple[str, ...] = ()) -> tuple[dict[str, Any], ...]:
    """Every object the chart renders (``helm template``'s hooks included)."""
    text = render_text(values, sets, kube, api_versions)
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def installed(objects: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """The objects ``helm install`` creates (hooks, such as the test Pod, are not)."""
    return tuple(o for o in objects
                 if "helm.sh/hook" not in o["metadata"].get("annotations", {}))


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


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def env_of(item: dict[str, Any]) -> dict[str, str | None]:
    return {entry["name"]: entry.get("value") for entry in item.get("env", [])}


def volumes_by_mount(deployment: dict[str, Any], item: dict[str, Any]) -> dict[str, dict]:
    """mount path -> the pod volume mounted there, in ``item`` (a container)."""
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in item.get("volumeMounts", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pre_stop_sleep_s(item: dict[str, Any]) -> int:
    command = item["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


# Validity, golden renders, the schema.

@pytest.mark.parametrize(("values", "sets", "kube", "apis", "versions"), RENDERS.values(),
                         ids=RENDERS.keys())
def test_every_rendered_object_is_valid_against_its_schema(values, sets, kube, apis, versions):
    objects = render(values, sets, kube, apis)
    assert objects
    for kubernetes in versions:
        for obj in objects:
            key = (obj["apiVersion"], obj["kind"])
            if key in crd_schemas():
                crd_schemas()[key].validate(obj)
                continue
            try:
                kubernetes_validate.validate(obj, kubernetes, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(f"no schema for {key}: commit its CRD under deploy/crds/")


@pytest.mark.parametrize("name", [*VALUES_FILES, "monitoring"])
def test_the_render_equals_its_golden_file(name: str) -> None:
    """The rendered manifests are reviewed like code: a change to a template shows here.
    ``HETSERVE_UPDATE_GOLDEN=1`` rewrites the golden files."""
    values, sets, kube, apis, _ = RENDERS[name]
    golden = GOLDEN / f"{name}.yaml"
    rendered = render_text(values, sets, kube, apis)
    if os.environ.get(UPDATE_GOLDEN_ENV) == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text(), f"render differs from {golden}"


def test_an_unknown_field_fails_validation() -> None:
    """The checks above can fail: a misspelt field in a core object and in each CRD kind."""
    monitoring = render(None, (), None, (MONITORING_API,))
    deployment = copy.deepcopy(one(monitoring, "Deployment", "-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, LATEST, strict=True)
    monitor = copy.deepcopy(one(monitoring, "ServiceMonitor", "-gateway"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas()[(MONITORING_API, "ServiceMonitor")].validate(monitor)
    rule = copy.deepcopy(one(monitoring, "PrometheusRule", "hs-hetserve"))
    rule["spec"]["groups"][0]["rules"][0]["fore"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas()[(MONITORING_API, "PrometheusRule")].validate(rule)
    service = copy.deepcopy(one(render("values-kserve.yaml"), "InferenceService", "-triton"))
    service["spec"]["predictor"]["model"]["storageURI"] = "pvc://x"
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas()[("serving.kserve.io/v1beta1", "InferenceService")].validate(service)


@pytest.mark.parametrize(("pair", "named"), [
    ("triton.replicsa=3", "replicsa"),
    ("triton.modelRepository.source=nfs", "triton.modelRepository.source"),
    ("gateway.image.digest=latest", "gateway.image.digest"),
    ("serviceMonitor.enabled=maybe", "serviceMonitor.enabled"),
])
def test_the_values_schema_refuses_a_misspelt_or_unknown_value(pair: str, named: str) -> None:
    failure = helm_template(None, (pair,), check=False)
    assert failure.returncode != 0 and named in failure.stderr, failure.stderr


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_helm_lint_strict_passes(values) -> None:
    command = [_helm(), "lint", "--strict", str(CHART)]
    if values:
        command += ["-f", str(CHART / values)]
    linted = subprocess.run(command, capture_output=True, text=True, check=False)
    assert linted.returncode == 0 and "0 chart(s) failed" in linted.stdout, linted.stdout


def test_the_values_schema_is_json_and_accepts_every_values_file() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    for name in VALUES_FILES.values():
        if name:
            assert set(yaml.safe_load((CHART / name).read_text())) <= set(schema["properties"])


def test_global_values_of_a_parent_chart_are_allowed() -> None:
    """As a subchart, the parent's ``global`` reaches this chart with whatever it holds."""
    objects = render(None, ("global.storageClass=fast", "global.imageRegistry=reg.example:5000",
                            "global.imagePullSecrets[0].name=parent-pull"))
    gateway = one(objects, "Deployment", "-gateway")
    assert container(gateway)["image"] == "reg.example:5000/hetserve/gateway:0.1.0"
    assert pod_spec(gateway)["imagePullSecrets"] == [{"name": "parent-pull"}]


# A plain cluster: nothing that needs a CRD; the Prometheus Operator's objects where it runs.

@pytest.mark.parametrize("kube", ["1.25.0", "1.30.0"])
def test_the_defaults_render_nothing_that_needs_a_crd_on_a_plain_cluster(kube: str) -> None:
    objects = render(None, (), kube)
    assert {o["apiVersion"] for o in objects} <= BUILT_IN_GROUPS
    for obj in objects:  # the cluster's own schemas, no CRD to fall back on
        kubernetes_validate.validate(obj, kube, strict=True)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in installed(objects)) == [
        ("Deployment", "hs-hetserve-gateway"), ("Deployment", "hs-hetserve-triton"),
        ("HorizontalPodAutoscaler", "hs-hetserve-gateway"),
        ("HorizontalPodAutoscaler", "hs-hetserve-triton"),
        ("NetworkPolicy", "hs-hetserve-gateway"), ("NetworkPolicy", "hs-hetserve-triton"),
        ("PodDisruptionBudget", "hs-hetserve-gateway"),
        ("PodDisruptionBudget", "hs-hetserve-triton"),
        ("Service", "hs-hetserve-gateway"), ("Service", "hs-hetserve-gateway-metrics"),
        ("Service", "hs-hetserve-triton-headless"), ("ServiceAccount", "hs-hetserve"),
    ]


@pytest.mark.parametrize("kube", ["1.25.0", "1.30.0"])
def test_with_the_monitoring_api_announced_the_service_monitors_and_alerts_come_back(
    kube: str,
) -> None:
    objects = render(None, (), kube, (MONITORING_API,))
    monitoring = sorted((o["kind"], o["metadata"]["name"]) for o in objects
                        if o["apiVersion"] == MONITORING_API)
    assert monitoring == [("PrometheusRule", "hs-hetserve"),
                          ("ServiceMonitor", "hs-hetserve-gateway"),
                          ("ServiceMonitor", "hs-hetserve-triton")]


@pytest.mark.parametrize(("switch", "api", "expected"), [
    ("true", False, {"ServiceMonitor", "PrometheusRule"}),  # asked for: rendered regardless
    ("false", True, set()),                                  # refused: not even where served
    ("auto", False, set()),
    ("auto", True, {"ServiceMonitor", "PrometheusRule"}),
])
def test_monitoring_objects_follow_auto_true_or_false(switch: str, api: bool, expected) -> None:
    objects = render(None, (f"serviceMonitor.enabled={switch}",
                            f"prometheusRule.enabled={switch}"),
                     None, (MONITORING_API,) if api else ())
    assert {o["kind"] for o in objects if o["apiVersion"] == MONITORING_API} == expected


# Triton: its entrypoint, ports, probes, shutdown; where the models come from.

def test_triton_keeps_its_image_entrypoint_and_its_ports_probes_gpu_and_shared_memory_agree():
    objects = render()
    deployment = one(objects, "Deployment", "-triton")
    triton = container(deployment)
    assert "command" not in triton  # the image's ENTRYPOINT runs (NGC: CUDA compatibility)
    assert triton["args"][0] == "tritonserver"
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
    assert volumes_by_mount(deployment, triton)["/dev/shm"]["emptyDir"]["medium"] == "Memory"

    headless = one(objects, "Service", "-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == ports
    assert selects(headless["spec"]["selector"], pod_labels(deployment))


def test_by_default_the_models_come_from_an_oci_image_copied_by_an_init_container():
    deployment = one(render(), "Deployment", "-triton")
    triton = container(deployment)
    (copy_models,) = pod_spec(deployment)["initContainers"]
    assert copy_models["image"] == "hetserve/models-cuda:0.1.0"
    assert copy_models["command"] == ["cp", "-R", "/models/.", "/model-repository/"]
    copied_into = volumes_by_mount(deployment, copy_models)["/model-repository"]
    served_from = volumes_by_mount(deployment, triton)["/models"]
    assert copied_into is served_from and "emptyDir" in served_from
    assert "--model-repository=/models" in triton["args"]
    assert next(m for m in triton["volumeMounts"] if m["mountPath"] == "/models")["readOnly"]
    assert copy_models["securityContext"]["readOnlyRootFilesystem"] is True


def test_an_image_volume_mounts_the_model_image_without_a_copy_where_kubernetes_has_them():
    deployment = one(render(None, IMAGE_VOLUME, "1.31.0"), "Deployment", "-triton")
    triton = container(deployment)
    assert "initContainers" not in pod_spec(deployment)
    volume = volumes_by_mount(deployment, triton)["/model-image"]
    assert volume["image"] == {"reference": "hetserve/models-cuda:0.1.0",
                               "pullPolicy": "IfNotPresent"}
    assert "--model-repository=/model-image/models" in triton["args"]
    too_old = helm_template(None, IMAGE_VOLUME, kube="1.30.0", check=False)
    assert too_old.returncode != 0 and "needs Kubernetes 1.31" in too_old.stderr


def test_a_claim_replaces_the_image_and_can_be_created():
    objects = render(None, OPTIONS)
    triton = one(objects, "Deployment", "-triton")
    claim = one(objects, "PersistentVolumeClaim", "hetserve-models")
    assert "initContainers" not in pod_spec(triton)
    served_from = volumes_by_mount(triton, container(triton))["/models"]
    assert served_from["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"],
                                                    "readOnly": True}


def test_s3_credentials_come_from_a_secret_as_the_environment_triton_reads():
    triton = container(one(render("values-production.yaml"), "Deployment", "-triton"))
    assert "--model-repository=s3://hetserve-models/model_repo_cuda" in triton["args"]
    assert triton["envFrom"] == [{"secretRef": {"name": "hetserve-s3"}}]
    assert {"/models", "/model-image"}.isdisjoint(m["mountPath"] for m in triton["volumeMounts"])


def test_gcs_credentials_are_a_mounted_key_file_that_google_application_credentials_names():
    deployment = one(render(None, GCS), "Deployment", "-triton")
    triton = container(deployment)
    assert "--model-repository=gs://b/repo" in triton["args"]
    key_file = Path(env_of(triton)["GOOGLE_APPLICATION_CREDENTIALS"])
    secret = volumes_by_mount(deployment, triton)[str(key_file.parent)]["secret"]
    assert secret["secretName"] == "gcs-key" and key_file.name == "key.json"
    assert next(m for m in triton["volumeMounts"]
                if m["mountPath"] == str(key_file.parent))["readOnly"] is True


def test_the_cpu_values_run_hetserves_cpu_triton_on_the_cpu_model_image():
    deployment = one(render("values-cpu.yaml"), "Deployment", "-triton")
    triton = container(deployment)
    assert triton["image"] == "hetserve/triton-cpu:0.1.0"
    assert triton["args"][0] == "tritonserver-cpu" and "command" not in triton
    assert "nvidia.com/gpu" not in triton["resources"].get("limits", {})
    assert "--allow-gpu-metrics=false" in triton["args"]
    assert pod_spec(deployment)["initContainers"][0]["image"] == "hetserve/models:0.1.0"
    assert pod_spec(deployment)["securityContext"]["runAsUser"] == 10001  # the image's user


TRITON_DEPLOYMENT_VALUES = {name: file for name, file in VALUES_FILES.items() if name != "kserve"}
"""The values files whose Triton is the chart's Deployment (KServe runs its own)."""


@pytest.mark.parametrize("values", TRITON_DEPLOYMENT_VALUES.values(),
                         ids=TRITON_DEPLOYMENT_VALUES.keys())
def test_triton_leaves_the_dns_answers_before_sigterm_and_has_time_to_finish(values) -> None:
    triton = one(render(values), "Deployment", "-triton")
    item = container(triton)
    sleep_s = pre_stop_sleep_s(item)
    assert sleep_s > 0
    exit_timeout_s = int(next(a for a in item["args"] if a.startswith(
        "--exit-timeout-secs=")).split("=")[1])
    assert pod_spec(triton)["terminationGracePeriodSeconds"] > sleep_s + exit_timeout_s


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_the_gateway_drains_once_on_sigterm_within_its_grace_period(values) -> None:
    """One drain, the gateway's own (/readyz 503 and Connection: close while it still serves):
    no preStop sleep before it, which would only add to it."""
    gateway = one(render(values), "Deployment", "-gateway")
    item = container(gateway)
    env = env_of(item)
    assert "lifecycle" not in item
    drain_s = float(env["HETSERVE_DRAIN_S"])
    assert drain_s > 0
    assert float(env["HETSERVE_SHUTDOWN_TIMEOUT_S"]) >= float(env["HETSERVE_INFER_TIMEOUT_S"])
    assert pod_spec(gateway)["terminationGracePeriodSeconds"] > (
        drain_s + float(env["HETSERVE_SHUTDOWN_TIMEOUT_S"]))


# The gateway: settings, ports, its Triton address, its metrics port.

def test_the_gateway_follows_its_settings_and_finds_every_triton_replica() -> None:
    objects = render()
    gateway = container(one(objects, "Deployment", "-gateway"))
    env = env_of(gateway)
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(env) <= fields  # HETSERVE_WORKERS included
    GatewaySettings(**{  # every value the chart sets is one the gateway accepts
        name[len(ENV_PREFIX):].lower(): value for name, value in env.items()
    })
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": int(env["HETSERVE_PORT"]),
                     "metrics": int(env["HETSERVE_METRICS_PORT"])}
    assert ports["http"] != ports["metrics"]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    target = parse_target(env["HETSERVE_TRITON_GRPC_URL"])
    headless = one(objects, "Service", "-triton-headless")
    assert target.dns_name == f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert target.port == next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")


def test_the_gateway_probes_are_routes_of_the_app_and_its_metrics_leave_the_api_port() -> None:
    from hetgateway.app import create_app

    on_their_own_port = create_app(GatewaySettings(metrics_port=8082))
    paths = set(on_their_own_port.openapi()["paths"])
    assert {"/healthz", "/readyz"} <= paths and "/metrics" not in paths
    public = one(render(), "Service", "-gateway")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_every_selector_selects_the_pods_it_is_for(values) -> None:
    objects = render(values, (), None, (MONITORING_API,))
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for deployment in deployments.values():
        assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    for obj in objects:
        spec = obj.get("spec", {})  # a ServiceAccount has none
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


def test_the_gateway_service_monitor_scrapes_the_metrics_port_not_the_api_port() -> None:
    objects = render(None, (), None, (MONITORING_API,))
    monitor = one(objects, "ServiceMonitor", "-gateway")
    service = one(objects, "Service", "-gateway-metrics")
    gateway = container(one(objects, "Deployment", "-gateway"))
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    container_port = next(p["containerPort"] for p in gateway["ports"]
                          if p["name"] == port["targetPort"])
    assert container_port == int(env_of(gateway)["HETSERVE_METRICS_PORT"])
    assert service["spec"]["clusterIP"] == "None"  # each pod scraped


# Network policies: Triton faces the gateway and Prometheus; the gateway's metrics, Prometheus.

def _from_prometheus(rule: dict[str, Any]) -> bool:
    return set(rule["from"][0]) == {"namespaceSelector", "podSelector"}


def test_only_the_gateway_and_prometheus_reach_triton() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy", "-triton")["spec"]
    triton = one(objects, "Deployment", "-triton")
    gateway = one(objects, "Deployment", "-gateway")
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(triton))
    assert policy["policyTypes"] == ["Ingress"]
    from_gateway, from_prometheus = policy["ingress"]
    assert selects(from_gateway["from"][0]["podSelector"]["matchLabels"], pod_labels(gateway))
    assert {p["port"] for p in from_gateway["ports"]} == {8001, 8000}
    assert _from_prometheus(from_prometheus)
    assert {p["port"] for p in from_prometheus["ports"]} == {8002}


def test_the_gateway_api_is_open_and_its_metrics_port_reaches_prometheus_only() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy", "-gateway")["spec"]
    gateway = one(objects, "Deployment", "-gateway")
    env = env_of(container(gateway))
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(gateway))
    assert policy["policyTypes"] == ["Ingress"]
    api, metrics = policy["ingress"]
    assert "from" not in api and api["ports"] == [{"port": int(env["HETSERVE_PORT"]),
                                                   "protocol": "TCP"}]
    assert _from_prometheus(metrics)
    assert metrics["ports"] == [{"port": int(env["HETSERVE_METRICS_PORT"]), "protocol": "TCP"}]


# Pods: security, identity, images, and the per-cluster values.

@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_every_container_runs_non_root_read_only_without_capabilities(values) -> None:
    for obj in render(values):
        if obj["kind"] not in ("Deployment", "Pod"):
            continue
        pod = pod_spec(obj) if obj["kind"] == "Deployment" else obj["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        if obj["kind"] == "Deployment":
            assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
                "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for item in pod["containers"] + pod.get("initContainers", []):
            security = item["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_every_pod_runs_as_the_charts_service_account_without_a_token() -> None:
    objects = render()
    account = one(objects, "ServiceAccount", "hs-hetserve")
    assert account["automountServiceAccountToken"] is False
    pods = [pod_spec(o) for o in objects if o["kind"] == "Deployment"]
    pods += [o["spec"] for o in objects if o["kind"] == "Pod"]
    assert {p["serviceAccountName"] for p in pods} == {account["metadata"]["name"]}
    annotated = render(None, ("serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:x",))
    assert one(annotated, "ServiceAccount", "hs-hetserve")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:x"}
    existing = render(None, ("serviceAccount.create=false", "serviceAccount.name=ops"))
    assert not [o for o in existing if o["kind"] == "ServiceAccount"]
    assert pod_spec(one(existing, "Deployment", "-triton"))["serviceAccountName"] == "ops"


def test_images_follow_registry_digest_and_pull_secrets() -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(None, ("global.imageRegistry=reg.example:5000",
                            f"gateway.image.digest={digest}", "imagePullSecrets[0].name=mine",
                            "global.imagePullSecrets[0].name=parent"))
    gateway, triton = one(objects, "Deployment", "-gateway"), one(objects, "Deployment", "-triton")
    assert container(gateway)["image"] == f"reg.example:5000/hetserve/gateway@{digest}"
    # NVIDIA's image keeps its own registry; hetserve's model image takes the global one
    assert container(triton)["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert pod_spec(triton)["initContainers"][0]["image"] == \
        "reg.example:5000/hetserve/models-cuda:0.1.0"
    for deployment in (gateway, triton):
        assert pod_spec(deployment)["imagePullSecrets"] == [{"name": "parent"}, {"name": "mine"}]
    test_pod = one(objects, "Pod", "-test-predict")
    assert test_pod["spec"]["containers"][0]["image"] == container(gateway)["image"]


def test_runtime_class_annotations_extra_volumes_and_cluster_domain_reach_the_pods() -> None:
    objects = render(None, (
        "triton.runtimeClassName=nvidia", "gateway.podAnnotations.team=ml",
        "triton.podAnnotations.team=ml", "clusterDomain=corp.internal",
        "triton.extraVolumes[0].name=cache", "triton.extraVolumes[0].emptyDir.medium=Memory",
        "triton.extraVolumeMounts[0].name=cache",
        "triton.extraVolumeMounts[0].mountPath=/cache",
        "gateway.extraVolumes[0].name=ca", "gateway.extraVolumes[0].configMap.name=ca-bundle",
        "gateway.extraVolumeMounts[0].name=ca", "gateway.extraVolumeMounts[0].mountPath=/ca",
    ))
    for obj in objects:
        kubernetes_validate.validate(obj, LATEST, strict=True)
    triton, gateway = one(objects, "Deployment", "-triton"), one(objects, "Deployment", "-gateway")
    assert pod_spec(triton)["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod_spec(gateway)
    assert gateway["spec"]["template"]["metadata"]["annotations"]["team"] == "ml"
    assert triton["spec"]["template"]["metadata"]["annotations"] == {"team": "ml"}
    assert volumes_by_mount(triton, container(triton))["/cache"]["emptyDir"] == {
        "medium": "Memory"}
    assert volumes_by_mount(gateway, container(gateway))["/ca"]["configMap"] == {
        "name": "ca-bundle"}
    text = render_text(None, ("clusterDomain=corp.internal",))
    assert "cluster.local" not in text and ".svc.corp.internal" in text


def test_api_keys_come_from_a_secret_file() -> None:
    objects = render(None, ("apiKeys.keys={k1,k2}",))
    secret = one(objects, "Secret", "-api-keys")
    deployment = one(objects, "Deployment", "-gateway")
    gateway = container(deployment)
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "api-keys")
    assert env_of(gateway)["HETSERVE_API_KEYS_FILE"] == f"{mount['mountPath']}/keys"
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert secret["stringData"]["keys"].split() == ["k1", "k2"]
    production = container(one(render("values-production.yaml"), "Deployment", "-gateway"))
    assert "HETSERVE_API_KEYS_FILE" in env_of(production)
    assert not [o for o in render("values-production.yaml") if o["kind"] == "Secret"]


# KServe.

def test_the_kserve_alternative_replaces_the_triton_deployment_and_serves_the_model_image():
    objects = render("values-kserve.yaml")
    assert not [o for o in objects if o["metadata"]["name"].endswith("-triton")
                and o["kind"] in ("Deployment", "HorizontalPodAutoscaler")]
    service = one(objects, "InferenceService", "-triton")
    assert service["spec"]["predictor"]["model"]["storageUri"] == \
        "oci://hetserve/models-cuda:0.1.0"
    env = env_of(container(one(objects, "Deployment", "-gateway")))
    target = parse_target(env["HETSERVE_TRITON_GRPC_URL"])
    assert target.addresses == (
        f"{service['metadata']['name']}-predictor.{NAMESPACE}.svc.cluster.local:80",)
    policy = one(objects, "NetworkPolicy", "-triton")["spec"]
    assert policy["podSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": service["metadata"]["name"]}


def test_kserve_serverless_is_refused_by_the_schema() -> None:
    """Knative would route through its activator and queue-proxy, which the NetworkPolicy does
    not open (deploy/README.md says why the chart refuses it rather than guess their labels)."""
    refused = helm_template("values-kserve.yaml", ("kserve.deploymentMode=Serverless",),
                            check=False)
    assert refused.returncode != 0
    # helm 3.17's words: kserve.deploymentMode must be one of the following: "RawDeployment"
    assert "kserve.deploymentMode" in refused.stderr and '"RawDeployment"' in refused.stderr


# Monitoring objects, the dashboard, the test hook, the notes.

def known_metric_names() -> set[str]:
    """The series names the gateway can expose (each family with its samples' suffixes), and
    Prometheus' own ``up``."""
    from hetgateway.metrics import GatewayMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    return {family.name + suffix for family in GatewayMetrics().registry.collect()
            for suffix in suffixes[family.type]} | {"up"}


def test_the_alerts_query_metrics_that_exist_scoped_to_this_release() -> None:
    rule = one(render(None, (), None, (MONITORING_API,)), "PrometheusRule", "hs-hetserve")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} >= {"HetserveGatewayErrors", "HetserveGatewayDown",
                                          "HetserveTritonDown", "HetserveTritonQueueTimeHigh"}
    known = known_metric_names()
    for item in rules:
        names = {n for n in re.findall(r"\b([a-z_][a-z0-9_]*)\{", item["expr"])}
        assert names and all(n in known or n.startswith("nv_") for n in names), item["expr"]
        for selector in re.findall(r"\{([^}]*)\}", item["expr"]):
            assert f'namespace="{NAMESPACE}"' in selector and "job=" in selector, item["expr"]
        assert item["labels"]["severity"] in {"warning", "critical"}
        assert item["for"] == "10m"


def test_alert_thresholds_come_from_the_values() -> None:
    rule = one(render(None, ("prometheusRule.enabled=true", "prometheusRule.latencyP99Seconds=3",
                             "prometheusRule.for=2m")), "PrometheusRule", "hs-hetserve")
    latency = next(r for g in rule["spec"]["groups"] for r in g["rules"]
                   if r["alert"] == "HetservePredictLatencyHigh")
    assert latency["expr"].rstrip().endswith("> 3") and latency["for"] == "2m"


def test_the_accuracy_alert_compares_the_estimate_with_the_cards_figure(tmp_path: Path) -> None:
    """The label-free accuracy estimate's alert (docker/prometheus/alerts.yml's, scoped to the
    release): its thresholds come from the values, and every rule passes promtool."""
    rule = one(render(None, ("prometheusRule.enabled=true",
                             "prometheusRule.accuracyMinImages=200")),
               "PrometheusRule", "hs-hetserve")
    accuracy = next(r for g in rule["spec"]["groups"] for r in g["rules"]
                    if r["alert"] == "HetserveEstimatedAccuracyDropped")
    assert ") > 0.05" in accuracy["expr"] and accuracy["expr"].rstrip().endswith(">= 200")
    promtool = Path(sys.executable).with_name("promtool")
    if not promtool.is_file():
        pytest.skip("prerequisite missing: promtool (make setup: scripts/promtool.sh)")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run([str(promtool), "check", "rules", str(rules)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_grafana_dashboard_configmap_holds_the_one_dashboard_file() -> None:
    assert not [o for o in render() if o["kind"] == "ConfigMap"]  # behind a value
    config_map = one(render(None, ("grafanaDashboard.enabled=true",)), "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["hetserve.json"]) == json.loads(DASHBOARD.read_text())
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mounts = {v["target"]: v["source"] for v in compose["services"]["grafana"]["volumes"]}
    assert (REPO_ROOT / mounts["/var/lib/grafana/dashboards"]).resolve() == DASHBOARD.parent


def test_the_helm_test_hook_sends_a_prediction_to_the_gateway_service() -> None:
    objects = render(None, ("apiKeys.keys={k1}",))
    pod = one(objects, "Pod", "-test-predict")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (item,) = pod["spec"]["containers"]
    assert item["command"][:2] == ["python", "-c"]
    assert item["command"][2] == (CHART / "files" / "predict-test.py").read_text()
    service = one(objects, "Service", "-gateway")
    port = service["spec"]["ports"][0]["port"]
    assert env_of(item)["HETSERVE_TEST_URL"] == \
        f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{port}"
    gateway = container(one(objects, "Deployment", "-gateway"))
    assert env_of(item)["HETSERVE_API_KEYS_FILE"] == env_of(gateway)["HETSERVE_API_KEYS_FILE"]


@pytest.fixture(scope="module")
def notes_chart(tmp_path_factory) -> Path:
    """A copy of the chart whose NOTES.txt is an ordinary template, so that ``helm template``
    (which never renders NOTES.txt, and ``helm install --dry-run`` needs a cluster) shows it."""
    copy_dir = tmp_path_factory.mktemp("chart") / "hetserve"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "templates" / "NOTES.txt").rename(copy_dir / "notes.txt")
    (copy_dir / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.txt") . | quote }}}\n')
    return copy_dir


def notes(chart: Path, values: str | None, apis: tuple[str, ...] = ()) -> str:
    rendered = helm_template(values, chart=chart, api_versions=apis,
                             show_only="templates/notes.yaml").stdout
    return yaml.safe_load(rendered)["data"]["notes"]


@pytest.mark.parametrize("values", VALUES_FILES.values(), ids=VALUES_FILES.keys())
def test_the_install_notes_render_and_say_how_to_reach_and_test_the_gateway(notes_chart, values):
    text = notes(notes_chart, values)
    assert "port-forward svc/hs-hetserve-gateway 8080:80" in text
    assert "helm test hs -n ml --logs" in text
    if values is None:
        assert "models from the image hetserve/models-cuda:0.1.0" in text
        assert "No ServiceMonitor: the cluster does not serve monitoring.coreos.com/v1" in text
        assert "ServiceMonitors rendered" in notes(notes_chart, None, (MONITORING_API,))
