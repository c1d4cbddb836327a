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


def test_predict_returns_the_contracts_predict_response(run_client, make_answer):
    answer = make_answer(3)
    outcome = run_client(
        lambda r: httpx.Response(200, json=answer.model_dump()), lambda c: c.predict([b"x"] * 3)
    )
    assert isinstance(outcome.result, PredictResponse)
    assert outcome.result == answer
    assert outcome.result.results[0].predictions[0].label == "Shirt"
    assert outcome.result.results[0].uncertainty.confusable[0].confused_with[0].label == "Pullover"


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
