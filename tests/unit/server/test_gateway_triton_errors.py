"""tritonclient's errors become the gateway's domain errors by gRPC status and message."""

from __future__ import annotations

import pytest
from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    InvalidInput,
    ModelNotReady,
)
from hetgateway.triton_backend import domain_error
from tritonclient.utils import InferenceServerException


@pytest.mark.parametrize(
    ("status", "message", "model", "expected"),
    [
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", "m", BackendTimeout),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", "m", BackendUnavailable),
        ("StatusCode.UNAVAILABLE", "Request for unknown model: 'm' is not found", "m",
         ModelNotReady),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", None,
         BackendUnavailable),
        ("StatusCode.RESOURCE_EXHAUSTED", "queue is full", "m", BackendUnavailable),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'images'", "m",
         InvalidInput),
        ("StatusCode.INTERNAL", "ONNX Runtime failed", "m", BackendError),
    ],
)
def test_grpc_failures_map_to_domain_errors(status, message, model, expected):
    error = domain_error(InferenceServerException(message, status=status), model=model)
    assert type(error) is expected
    assert str(error)
