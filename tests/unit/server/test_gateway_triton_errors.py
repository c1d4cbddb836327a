"""Triton's gRPC failures become the gateway's domain errors by status code alone."""

from __future__ import annotations

import grpc
import pytest
from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelNotReady,
)
from hetgateway.triton_errors import domain_error


@pytest.mark.parametrize(
    ("code", "model", "expected"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "m", BackendTimeout),
        (grpc.StatusCode.UNAVAILABLE, "m", BackendUnavailable),
        (grpc.StatusCode.UNAVAILABLE, None, BackendUnavailable),
        (grpc.StatusCode.CANCELLED, "m", BackendUnavailable),
        (grpc.StatusCode.NOT_FOUND, "m", ModelNotReady),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "m", BackendUnavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, "m", InvalidInput),
        (grpc.StatusCode.INTERNAL, "m", BackendError),
        (grpc.StatusCode.UNKNOWN, None, BackendError),
        (None, "m", BackendError),
    ],
)
def test_grpc_failures_map_to_domain_errors_by_status_code(code, model, expected):
    error = domain_error(code, "whatever Triton said", model=model)
    assert type(error) is expected
    assert str(error)


def test_the_message_names_the_model_and_keeps_tritons_words():
    error = domain_error(grpc.StatusCode.NOT_FOUND, "Request for unknown model", model="m")
    assert "'m'" in str(error) and "Request for unknown model" in str(error)
