"""The gateway's settings: one object, read from ``HETSERVE_*`` environment variables.

Typical usage::

    settings = load_settings()                      # HETSERVE_TRITON_GRPC_URL=... etc.
    settings = load_settings(max_inputs_per_request=8)   # explicit values win
    app = create_app(settings)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "HETSERVE_"
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_TRITON_GRPC_URL = "127.0.0.1:8001"
DEFAULT_MAX_INPUTS_PER_REQUEST = 64
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 16_000_000
DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_BODY_READ_TIMEOUT_S = 30.0
DEFAULT_LISTEN_BACKLOG = 2048
DEFAULT_LINGER_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_LINGER_TIMEOUT_S = 10.0
DEFAULT_ACCURACY_WINDOW_IMAGES = 1000
DEFAULT_TRITON_CALLS_PER_REPLICA = 2
DEFAULT_DRAIN_S = 5.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
DEFAULT_REPLICA_RELEASE_TIMEOUT_S = 10.0


class GatewaySettings(BaseSettings):
    """Everything the gateway can be told; each field is ``HETSERVE_<FIELD>`` in the environment.

    List fields (``model_repositories``) take JSON in the environment, e.g.
    ``HETSERVE_MODEL_REPOSITORIES='["model_repo"]'``.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    triton_grpc_url: str = Field(
        default=DEFAULT_TRITON_GRPC_URL,
        description=(
            "Triton's gRPC target: host:port, ipv4:a:p,b:p (replicas), or "
            "dns:///name:port (every address of the name, e.g. a headless Service)"
        ),
    )
    triton_replica_check_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="how often Triton's replicas are probed (and a dns:/// target resolved)",
    )
    host: str = Field(default="127.0.0.1", description="address the gateway binds")
    port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=0, le=65535, description="gateway port")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "serve /metrics on this port of its own (same address as the gateway, no API key), "
            "and not on the gateway's port; unset: /metrics on the gateway's port"
        ),
    )
    default_model: str | None = Field(
        default=None,
        description=(
            "model behind POST /v1/predict; unset: the first heteroscedastic model by name"
        ),
    )
    model_repositories: list[Path] = Field(
        default_factory=list,
        description="repositories to read model_card.json from when Triton's config lacks it",
    )
    max_inputs_per_request: int = Field(
        default=DEFAULT_MAX_INPUTS_PER_REQUEST,
        ge=1,
        description=(
            "most inputs (images or tensors) in one predict request; a request beyond a "
            "model's Triton batch limit goes out in several calls"
        ),
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1, description="largest request body, bytes"
    )
    max_image_bytes: int = Field(
        default=DEFAULT_MAX_IMAGE_BYTES, ge=1, description="largest encoded image, bytes"
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description="largest decoded image, width x height (decompression-bomb guard)",
    )
    coalesce: bool = Field(
        default=True,
        description=(
            "merge requests for a model that arrive while its Triton calls are in flight into "
            "one batched call when a call slot frees (no timer; answers are unchanged)"
        ),
    )
    triton_calls_per_replica: int = Field(
        default=DEFAULT_TRITON_CALLS_PER_REPLICA,
        ge=1,
        description=(
            "Triton calls in flight per model and replica up; further requests wait and go "
            "out merged (with coalesce on)"
        ),
    )
    infer_timeout_s: float = Field(
        default=10.0, gt=0, description="client-side timeout of one Triton inference"
    )
    control_timeout_s: float = Field(
        default=0.5, gt=0, description="client-side timeout of Triton health/metadata calls"
    )
    retry_after_s: int = Field(
        default=1, ge=0, description="Retry-After sent with 503 answers, seconds"
    )
    grpc_max_reconnect_backoff_ms: int = Field(
        default=500, ge=100, description="cap on gRPC's reconnect backoff once Triton is back"
    )
    log_level: str = Field(default="info", description="uvicorn log level")
    opentelemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's built-in OpenTelemetry spans, metrics and logs for every request, sent "
            "to the globally configured providers (off: Prometheus metrics and JSON logs only)"
        ),
    )
    max_in_flight: int = Field(
        default=DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        description="API requests served at once; beyond it 429 with Retry-After",
    )
    listen_backlog: int = Field(
        default=DEFAULT_LISTEN_BACKLOG,
        ge=1,
        description=(
            "connections the kernel queues before the gateway accepts them (listen backlog; "
            "capped by net.core.somaxconn)"
        ),
    )
    limit_concurrency: int | None = Field(
        default=None,
        ge=1,
        description=(
            "hard cap on open connections and tasks; beyond it the HTTP server answers 503 "
            "before the app sees the request; unset: no cap (admission control still bounds "
            "API requests in flight)"
        ),
    )
    body_read_timeout_s: float = Field(
        default=DEFAULT_BODY_READ_TIMEOUT_S,
        gt=0,
        description="longest time to receive a request body; slower clients get 408",
    )
    api_keys: SecretStr | None = Field(
        default=None, description="comma-separated API keys; unset (and no file): auth off"
    )
    api_keys_file: Path | None = Field(
        default=None, description="file of API keys, one per line ('#' comments)"
    )
    model_load_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="longest wait for Triton to load or unload a model (POST "
        "/v1/models/{model}/load, /unload; allowed only with API keys configured)",
    )
    cors_origins: str | None = Field(
        default=None, description="comma-separated origins allowed by CORS; unset: CORS off"
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        description=(
            "gateway worker processes sharing the port; unset: the command's default "
            "(`gateway`: the usable cores; `serve`: half of them, Triton has the rest)"
        ),
    )
    linger_max_bytes: int = Field(
        default=DEFAULT_LINGER_MAX_BYTES,
        ge=0,
        description=(
            "after a 413, request-body bytes read and discarded before the connection is "
            "closed, so that clients that send the whole body first read the answer"
        ),
    )
    linger_timeout_s: float = Field(
        default=DEFAULT_LINGER_TIMEOUT_S,
        ge=0,
        description="after a 413, longest time spent discarding the rest of the body",
    )
    accuracy_window_images: int = Field(
        default=DEFAULT_ACCURACY_WINDOW_IMAGES,
        ge=1,
        description=(
            "answered images per model (per worker) the label-free accuracy estimate "
            "(hetserve_estimated_accuracy, ATC) is taken over"
        ),
    )
    drain_s: float = Field(
        default=DEFAULT_DRAIN_S,
        ge=0,
        description=(
            "on SIGTERM, seconds the gateway keeps serving with /readyz answering 503 (so "
            "that load balancers and Kubernetes' endpoints stop sending to it) and every "
            "answer saying Connection: close, before it stops accepting; 0: no drain. A "
            "second SIGTERM, or SIGINT, ends the drain at once"
        ),
    )
    shutdown_timeout_s: float = Field(
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        gt=0,
        description=(
            "after the drain (or on SIGINT), longest wait for the requests in flight to be "
            "answered before they are cancelled"
        ),
    )
    triton_replica_release_timeout_s: float = Field(
        default=DEFAULT_REPLICA_RELEASE_TIMEOUT_S,
        gt=0,
        description=(
            "a Triton replica that left a dns: target's answer gets no new calls but keeps "
            "its channel until its calls in flight end, at most this long (calls still "
            "running then are cancelled, and retried on another replica if time is left)"
        ),
    )
    triton_drain_s: float = Field(
        default=DEFAULT_DRAIN_S,
        ge=0,
        description=(
            "`hetgateway triton`: on SIGTERM, seconds Triton keeps serving before it is "
            "stopped (time for DNS and the gateways to drop the replica); 0: stop at once"
        ),
    )


def load_settings(**overrides: Any) -> GatewaySettings:
    """Build the settings from the environment; keyword overrides win."""
    return GatewaySettings(**overrides)
