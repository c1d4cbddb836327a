"""Optional API-key authentication: off without keys; with keys, 401 for any API call lacking one.

Typical usage::

    keys = load_api_keys(keys_text=os.environ.get("HETSERVE_API_KEYS"),
                         keys_file=os.environ.get("HETSERVE_API_KEYS_FILE"))
    if keys:
        app = ApiKeyMiddleware(app, keys=keys)

    curl -H "Authorization: Bearer $KEY" ...      # or: -H "X-API-Key: $KEY"

Keys come from a comma-separated string and/or a file (one key per line, ``#`` comments).
Only SHA-256 digests of the keys are kept, and a presented key is hashed and compared with
every digest by ``hmac.compare_digest``, so the comparison time reveals neither a key's
characters nor its length. Health and readiness, the metrics scrape, the web page and the API
docs stay open; a deployment that sets ``HETSERVE_METRICS_PORT`` serves the metrics on that port
only (``hetgateway.metrics_server``), which a network policy opens to Prometheus alone. Keys
are never logged, and the 401 answer does not echo what was sent.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from hetgateway.errors import Unauthorized
from hetgateway.http_errors import error_response

OPEN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/favicon.ico"}
)
OPEN_PATH_PREFIXES = ("/static/",)
_BEARER_PREFIX = "bearer "


class ApiKeyConfigError(ValueError):
    """The configured keys cannot be used (an unreadable file, or no key in what was given)."""


@dataclass(frozen=True)
class ApiKeys:
    """SHA-256 digests of the accepted keys (never the keys themselves)."""

    digests: tuple[bytes, ...]

    def __bool__(self) -> bool:
        return bool(self.digests)

    def accepts(self, presented: str) -> bool:
        """True when ``presented`` is one of the keys; compares against every digest in
        constant time, without stopping at the first match."""
        candidate = _digest(presented)
        matched = False
        for digest in self.digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def load_api_keys(*, keys_text: str | None = None, keys_file: str | Path | None = None) -> ApiKeys:
    """Keys from a comma-separated string and from a file (one per line, blank lines and lines
    starting with ``#`` skipped). Neither given: no keys, authentication off.

    Raises ApiKeyConfigError when the file cannot be read or a source is given but holds no key,
    so that a misconfigured deployment fails at start instead of running open.
    """
    keys: list[str] = []
    if keys_text is not None and keys_text.strip():
        keys += [k.strip() for k in keys_text.split(",") if k.strip()]
    if keys_file is not None and str(keys_file).strip():
        path = Path(keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ApiKeyConfigError(f"cannot read the API key file {path}: {error}") from error
        from_file = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not from_file:
            raise ApiKeyConfigError(f"the API key file {path} holds no key")
        keys += from_file
    return ApiKeys(digests=tuple(_digest(k) for k in dict.fromkeys(keys)))


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, if any."""
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"authorization":
            text = value.decode("latin-1")
            if text.lower().startswith(_BEARER_PREFIX):
                return text[len(_BEARER_PREFIX) :].strip()
        elif lowered == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


def is_open_path(path: str) -> bool:
    """Paths served without a key: health, readiness, metrics, the web page and the docs."""
    return path in OPEN_PATHS or path.startswith(OPEN_PATH_PREFIXES)


class ApiKeyMiddleware:
    """Pure ASGI middleware answering 401 to requests for closed paths without a valid key."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys) -> None:
        if not keys:
            raise ApiKeyConfigError("ApiKeyMiddleware needs at least one key")
        self.app = app
        self.keys = keys
        self._refusal = error_response(  # the same answer every time: built once
            Unauthorized(
                "a valid API key is required: send 'Authorization: Bearer <key>' "
                "or 'X-API-Key: <key>'"
            ),
            retry_after_s=0,
        )
        self._refusal.headers["WWW-Authenticate"] = "Bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        if key is None or not self.keys.accepts(key):
            await self._refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)
