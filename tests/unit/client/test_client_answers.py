"""What the SDK returns: the HTTP contract's own models, the same for sync and async."""

from __future__ import annotations

import hetclient
import httpx
from hetcontract import ModelDetail, ModelList, PredictResponse

LISTING = {
    "default_model": "fashion_het",
    "models": [
        {
            "name": "fashion_het",
            "version": "1",
            "ready": True,
            "head": "het",
            "num_classes": 2,
            "labels": ["a", "b"],
        },
        {
            "name": "fashion_det",
            "version": "1",
            "ready": False,
            "head": "det",
            "num_classes": 2,
            "labels": ["a", "b"],
        },
    ],
}


WIRE_ANSWER = """{
 "model": {"name": "fashion_het", "version": "1", "num_classes": 10, "mc_samples": 1000,
           "temperature": 0.5},
 "results": [{
  "predictions": [{"class_id": 6, "label": "Shirt", "probability": 0.6515},
                  {"class_id": 2, "label": "Pullover", "probability": 0.2076}],
  "uncertainty": {
   "predictive_entropy": 0.9857, "normalized_entropy": 0.4281, "expected_entropy": 0.7353,
   "mutual_information": 0.2504,
   "latent_correlation": {"class_ids": [6, 2], "matrix": [[1.0, -0.132], [-0.132, 1.0]]},
   "confusable": [{"class_id": 6, "confused_with": [
                    {"class_id": 0, "label": "T-shirt/top", "share": 0.633}]},
                  {"class_id": 2, "confused_with": [
                    {"class_id": 4, "label": "Coat", "share": 0.4255}]}]}
 }],
 "request_id": "549c36ec"
}"""
"""An answer as the gateway puts it on the wire (README's example, shortened), written out by
hand: what the SDK returns is read from these bytes, not from a model it built itself."""


def test_predict_returns_the_contracts_predict_response(run_client):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, content=WIRE_ANSWER.encode(),
                              headers={"Content-Type": "application/json"})

    outcome = run_client(handler, lambda c: c.predict([b"x"], model="fashion_het", top_k=2))
    assert seen == ["POST /v1/models/fashion_het/predict"]
    answer = outcome.result
    assert isinstance(answer, PredictResponse)
    assert (answer.model.name, answer.model.mc_samples, answer.model.temperature) == (
        "fashion_het", 1000, 0.5)
    assert answer.request_id == "549c36ec"
    (result,) = answer.results
    assert [(p.class_id, p.label, p.probability) for p in result.predictions] == [
        (6, "Shirt", 0.6515), (2, "Pullover", 0.2076)]
    u = result.uncertainty
    assert (u.predictive_entropy, u.normalized_entropy, u.expected_entropy,
            u.mutual_information) == (0.9857, 0.4281, 0.7353, 0.2504)
    assert u.latent_correlation.class_ids == [6, 2]
    assert u.latent_correlation.matrix[0][1] == -0.132
    assert [(c.class_id, [(k.label, k.share) for k in c.confused_with])
            for c in u.confusable] == [(6, [("T-shirt/top", 0.633)]), (2, [("Coat", 0.4255)])]


def test_models_returns_the_listing(run_client):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json=LISTING)

    outcome = run_client(handler, lambda c: c.models())
    assert seen == ["GET /v1/models"]
    assert isinstance(outcome.result, ModelList)
    assert [m.ready for m in outcome.result.models] == [True, False]


def test_model_returns_the_detail_with_the_model_card(run_client):
    detail = {**LISTING["models"][0], "model_card": {"name": "fashion_het", "mc_samples": 1000}}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=detail)

    outcome = run_client(handler, lambda c: c.model("fashion_het"))
    assert seen == ["/v1/models/fashion_het"]
    assert isinstance(outcome.result, ModelDetail)
    assert outcome.result.model_card["mc_samples"] == 1000


def test_health_and_ready_are_true_when_the_gateway_says_ok(run_client):
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"status": "ok"})

    assert run_client(handler, lambda c: c.health()).result is True
    assert run_client(handler, lambda c: c.ready()).result is True
    assert paths == ["/healthz", "/readyz"]


def test_public_names_are_exactly_all():
    public = {name for name in vars(hetclient) if not name.startswith("_")}
    modules = {
        "async_client",
        "audit",
        "base_client",
        "client",
        "errors",
        "inputs",
        "retries",
        "cli",
        "table",
    }
    assert set(hetclient.__all__) == public - modules
    assert len(hetclient.__all__) == len(set(hetclient.__all__))
    assert all(hasattr(hetclient, name) for name in hetclient.__all__)


def test_the_sdk_does_not_import_the_gateway_or_torch():
    import subprocess
    import sys

    code = (
        "import sys, hetclient, hetclient.cli;"
        "heavy = {'hetgateway', 'torch', 'fastapi', 'tritonclient', 'PIL', 'numpy'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
