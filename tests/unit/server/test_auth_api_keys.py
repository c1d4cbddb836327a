"""Optional API keys: from the environment or a file; 401 without; health and docs stay open."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hetgateway.auth import ApiKeyConfigError, ApiKeyMiddleware, ApiKeys, load_api_keys
from hetgateway.logging_config import JsonFormatter
from hetgateway.request_context import RequestContextMiddleware

KEY = "k3y-Alpha-0123456789"
OTHER_KEY = "second-key"


def _client(keys: ApiKeys) -> TestClient:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"models": []}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> dict:
        return {}

    @app.get("/static/index.js")
    async def static() -> dict:
        return {}

    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(RequestContextMiddleware)
    return TestClient(app)


def test_keys_come_from_a_comma_separated_string_and_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("# deployment keys\n\n  file-key  \n", encoding="utf-8")
    keys = load_api_keys(keys_text=f" {KEY} ,, {OTHER_KEY}", keys_file=key_file)
    assert len(keys.digests) == 3
    assert all(keys.accepts(k) for k in (KEY, OTHER_KEY, "file-key"))
    assert not keys.accepts("# deployment keys")


def test_no_key_source_means_authentication_is_off() -> None:
    assert not load_api_keys(keys_text=None, keys_file=None)
    assert not load_api_keys(keys_text="  ", keys_file="")


def test_a_file_without_keys_or_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(ApiKeyConfigError, match="holds no key"):
        load_api_keys(keys_file=empty)
    with pytest.raises(ApiKeyConfigError, match="cannot read"):
        load_api_keys(keys_file=tmp_path / "missing")


@pytest.mark.parametrize("wrong", ["", KEY[:-1], KEY + "x", KEY.upper(), " ", "k" * 4096])
def test_only_an_exact_key_is_accepted(wrong: str) -> None:
    keys = load_api_keys(keys_text=KEY)
    assert keys.accepts(KEY)
    assert not keys.accepts(wrong)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": KEY}],
    ids=["none", "wrong-bearer", "wrong-x-api-key", "missing-bearer-scheme"],
)
def test_api_call_without_a_valid_key_gets_401_with_the_error_body(headers: dict) -> None:
    answer = _client(load_api_keys(keys_text=KEY)).get("/v1/models", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["error"]["code"] == "unauthorized"
    assert "nope" not in answer.text


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {KEY}"}, {"Authorization": f"bearer {OTHER_KEY}"},
                {"X-API-Key": KEY}]
)
def test_api_call_with_a_valid_key_is_served(headers: dict) -> None:
    client = _client(load_api_keys(keys_text=f"{KEY},{OTHER_KEY}"))
    assert client.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/static/index.js"])
def test_health_readiness_metrics_and_the_web_page_stay_open(path: str) -> None:
    assert _client(load_api_keys(keys_text=KEY)).get(path).status_code == 200


def test_keys_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    client = _client(load_api_keys(keys_text=KEY))
    with caplog.at_level(logging.DEBUG, logger="hetgateway"):
        client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        client.get("/v1/models", headers={"X-API-Key": "guessed-key-xyz"})
    lines = [
        JsonFormatter().format(record)
        for record in caplog.records
        if record.name.startswith("hetgateway")
    ]
    assert len(lines) == 2, "the access log should have recorded both requests"
    assert not any(KEY in line or "guessed-key-xyz" in line for line in lines)


def test_middleware_refuses_to_run_without_keys() -> None:
    with pytest.raises(ApiKeyConfigError):
        ApiKeyMiddleware(FastAPI(), keys=ApiKeys(digests=()))
