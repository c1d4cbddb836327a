"""One Triton replica's gRPC channel and the KServe v2 stub the gateway calls it through.

The stub is ``GRPCInferenceServiceStub``, the generated service class tritonclient ships
(``tritonclient.grpc.service_pb2_grpc``): the gateway builds its own ``ModelInferRequest``
and reads the ``ModelInferResponse`` itself, so nothing on the hot path goes through
tritonclient's client wrappers or their private attributes. A failed call raises
``grpc.aio.AioRpcError``; ``hetgateway.triton_errors`` maps its status code.

Typical usage::

    channel = TritonChannel("127.0.0.1:8001", max_reconnect_backoff_ms=500)
    ready = await channel.stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=0.5)
    await channel.close()
"""

from __future__ import annotations

from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
INITIAL_RECONNECT_BACKOFF_MS = 100
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 2_000


class TritonChannel:
    """An insecure gRPC channel to one replica (``host:port`` or ``unix:path``) and its stub.

    The channel reconnects by itself; its reconnect backoff is capped at
    ``max_reconnect_backoff_ms`` so that a Triton that comes back is used again soon.
    """

    def __init__(self, address: str, *, max_reconnect_backoff_ms: int) -> None:
        self.address = address
        self._channel = grpc.aio.insecure_channel(
            address, options=channel_options(max_reconnect_backoff_ms=max_reconnect_backoff_ms)
        )
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self, *, grace_s: float | None = None) -> None:
        """Close the channel; calls still running get ``grace_s`` to end (None: cancelled)."""
        await self._channel.close(grace=grace_s)


def channel_options(*, max_reconnect_backoff_ms: int) -> list[tuple[str, Any]]:
    """The channel arguments of every replica channel: no message size cap, keepalive pings
    (a replica that vanishes without a reset is noticed), capped reconnect backoff."""
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", max_reconnect_backoff_ms),
    ]
