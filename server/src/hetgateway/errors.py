"""The gateway's domain errors. They carry a message and no HTTP status: ``http_errors`` turns
each into an answer in one place, so the data plane stays free of HTTP.

Typical usage::

    raise ModelNotFound(f"no model named {name!r}; served: fashion_het, fashion_det")
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway answers deliberately (never a traceback)."""


class ClientError(GatewayError):
    """The caller's mistake: the request cannot succeed as sent."""


class ModelNotFound(ClientError):
    """The named model is not served."""


class InvalidImage(ClientError):
    """Bytes that are not a decodable image, or an image the gateway refuses (a bomb)."""


class InvalidInput(ClientError):
    """A request that is well-formed but violates the API: wrong shape, NaN, bad top_k."""


class MalformedRequest(ClientError):
    """A body that cannot be parsed at all (empty, not JSON, broken multipart)."""


class PayloadTooLarge(ClientError):
    """A body or an image beyond the configured limits."""


class UnsupportedMediaType(ClientError):
    """A Content-Type the predict endpoints do not take."""


class Unauthorized(ClientError):
    """API keys are configured and the request carries none that matches."""


class Forbidden(ClientError):
    """The action is not allowed here (model control without API keys configured)."""


class ModelLoadRefused(ClientError):
    """Triton would not load (or unload) a model as asked: broken files, unknown model, or a
    Triton without explicit model control. What served before still serves."""


class RequestTimeout(ClientError):
    """The body arrived too slowly (a slow or stalled client)."""


class RouteNotFound(ClientError):
    """No such path."""


class MethodNotAllowed(ClientError):
    """The path exists, the method does not."""


class ServerSideError(GatewayError):
    """The request was fine; the serving side cannot answer it now."""


class Overloaded(ServerSideError):
    """The gateway is serving its limit of requests in flight (admission control)."""


class ModelNotReady(ServerSideError):
    """Triton knows the model but it is not ready (loading, unloaded, failed)."""


class BackendUnavailable(ServerSideError):
    """Triton cannot be reached."""


class BackendTimeout(ServerSideError):
    """Triton did not answer within the client-side timeout."""


class ShuttingDown(ServerSideError):
    """The gateway got SIGTERM: it still answers, but is no longer ready for new traffic."""


class BackendError(ServerSideError):
    """Triton answered with an error that is not the caller's fault."""
