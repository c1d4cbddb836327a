"""Settings come from HETSERVE_* variables, explicit values win, bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hetgateway.settings import GatewaySettings, load_settings
from pydantic import ValidationError


def test_defaults_serve_on_loopback_in_front_of_a_local_triton(monkeypatch):
    for name in ("HETSERVE_TRITON_GRPC_URL", "HETSERVE_PORT", "HETSERVE_MAX_INPUTS_PER_REQUEST"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.triton_grpc_url == "127.0.0.1:8001"
    assert settings.max_inputs_per_request == 64


def test_environment_variables_with_the_prefix_are_read(monkeypatch):
    monkeypatch.setenv("HETSERVE_TRITON_GRPC_URL", "triton:8001")
    monkeypatch.setenv("HETSERVE_MAX_INPUTS_PER_REQUEST", "8")
    monkeypatch.setenv("HETSERVE_INFER_TIMEOUT_S", "2.5")
    monkeypatch.setenv("HETSERVE_MODEL_REPOSITORIES", '["model_repo", "more"]')
    settings = load_settings()
    assert settings.triton_grpc_url == "triton:8001"
    assert settings.max_inputs_per_request == 8
    assert settings.infer_timeout_s == 2.5
    assert settings.model_repositories == [Path("model_repo"), Path("more")]


def test_explicit_values_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("HETSERVE_PORT", "9000")
    assert load_settings(port=9100).port == 9100


@pytest.mark.parametrize("field, value", [("max_inputs_per_request", 0), ("port", 70000),
                                          ("infer_timeout_s", 0), ("no_such_setting", 1)])
def test_invalid_or_unknown_settings_are_refused(field, value):
    with pytest.raises(ValidationError):
        load_settings(**{field: value})


def test_settings_are_immutable():
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    assert isinstance(settings, GatewaySettings)
