"""Triton's gRPC failures, by ``grpc.StatusCode``: which send a call to another replica, and
which domain error each becomes. No error message is parsed.

Triton answers (measured on Triton 2.51):

- ``NOT_FOUND`` for a model it does not serve ("Request for unknown model"), which is what a
  replica that is shutting down says to every inference from its SIGTERM on: measured under
  steady load, within 5 ms of the signal it unloads its models (it waits only for the
  inferences already running) and its ``ServerReady`` and ``ServerLive`` answer
  ``UNAVAILABLE`` "Server exiting"; about 2 s later its gRPC server stops;
- ``UNAVAILABLE`` when it cannot serve now, and gRPC itself says ``UNAVAILABLE`` when the
  replica cannot be reached (refused, reset, no route);
- ``CANCELLED`` for a call whose channel was closed under it, or whose server stopped under it;
- ``INVALID_ARGUMENT`` for a request that does not fit the model (shape, type);
- ``RESOURCE_EXHAUSTED`` when a queue policy refuses the call;
- ``DEADLINE_EXCEEDED`` when the client-side timeout ran out.

Typical usage::

    except grpc.aio.AioRpcError as exc:
        if exc.code() in GONE_CODES: ...                 # try another replica
        raise domain_error(exc.code(), exc.details(), model="fashion_het") from exc
"""

from __future__ import annotations

import grpc

from hetgateway.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    InvalidInput,
    ModelNotReady,
)

GONE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
"""The replica cannot take calls now (unreachable, closed, shutting down): it leaves the
rotation until a probe finds it ready, and the call goes to another replica."""
MAYBE_GONE_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
"""A connection reset in the middle of a call can surface as these; the replica is gone if it
then fails a liveness probe (a live Triton's own INTERNAL error is the answer)."""
MODEL_MISSING_CODES = frozenset({grpc.StatusCode.NOT_FOUND})
"""The replica answered but does not serve the model: the call goes to another replica, and
if one answers, the first leaves the rotation (it is going away, or lost the model)."""


def domain_error(code: grpc.StatusCode | None, details: str | None, *, model: str | None
                 ) -> GatewayError:
    """The domain error for a failed call about ``model`` (None: a call about Triton itself)."""
    about = f"model {model!r}" if model else "Triton"
    message = details or (code.name if code is not None else "no status")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout(f"Triton did not answer for {about} in time")
    if code in MODEL_MISSING_CODES:
        return ModelNotReady(f"{about} is not ready in Triton: {message}")
    if code in GONE_CODES:
        return BackendUnavailable(f"Triton is unreachable: {message}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendUnavailable(f"Triton is overloaded: {message}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(f"Triton refused the request for {about}: {message}")
    return BackendError(f"Triton failed on {about}: {message}")
