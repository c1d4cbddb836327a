"""No path skips a declared dependency: a dependency added to a predict route, to the
predict router, where the router is included, or to the app runs for every prediction, as it
does for any other route, with no dependency override set (production's configuration)."""

from __future__ import annotations

import base64

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from hetgateway.routers import predict

EXAMPLE_PNG = base64.b64encode(
    bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                  "3a7e9b550000000a4944415478da6360000000020001e5270ede0000000049454e44ae426082")
).decode()
BODY = {"inputs": [{"image": EXAMPLE_PNG}], "top_k": 2}


def audited(calls: list[str]):
    """A real dependency: records the path it ran for, and refuses a caller without the
    header it wants (as an auth or tenancy dependency would)."""

    async def check(request: Request) -> None:
        calls.append(request.url.path)
        if request.headers.get("x-tenant") != "ours":
            raise HTTPException(status_code=403, detail="no tenant")

    return Depends(check)


def predicts(client: TestClient) -> tuple[int, int]:
    """Statuses of a prediction without and with the header the dependency wants."""
    refused = client.post("/v1/models/fashion_het/predict", json=BODY)
    allowed = client.post("/v1/predict", json=BODY, headers={"x-tenant": "ours"})
    assert allowed.status_code != 200 or allowed.json()["results"]
    return refused.status_code, allowed.status_code


def test_a_prediction_is_answered_through_the_whole_app(fake_app):
    with TestClient(fake_app()) as client:
        answer = client.post("/v1/models/fashion_het/predict", json=BODY)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"][0]["predictions"]) == 2


@pytest.mark.parametrize("where", ["app", "include", "router", "route"])
def test_a_dependency_added_anywhere_runs_for_predictions(fake_app, where):
    """The predict routes in an app of their own (with the gateway app's lifespan, which
    builds the data plane), the dependency added at one level."""
    calls: list[str] = []
    gateway = fake_app()
    app = FastAPI(dependencies=[audited(calls)] if where == "app" else None,
                  lifespan=gateway.router.lifespan_context)
    if where in ("app", "include"):
        app.include_router(predict.router,
                           dependencies=[audited(calls)] if where == "include" else None)
    elif where == "router":
        router = APIRouter(dependencies=[audited(calls)])
        router.include_router(predict.router)
        app.include_router(router)
    else:
        router = APIRouter()
        for route in predict.router.routes:
            router.add_api_route(route.path, route.endpoint, methods=list(route.methods),
                                 dependencies=[audited(calls)])
        app.include_router(router)
    with TestClient(app) as client:
        assert predicts(client) == (403, 200)
    assert calls == ["/v1/models/fashion_het/predict", "/v1/predict"]
