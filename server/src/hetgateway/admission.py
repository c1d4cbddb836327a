"""Admission control: a bound on API requests in flight; beyond it, 429 with Retry-After.

Typical usage (outermost but for CORS, see ``hetgateway.protection``)::

    gate = AdmissionGate(max_in_flight=64, metrics=metrics)
    app.add_middleware(AdmissionMiddleware, gate=gate, retry_after_s=1)

An unbounded queue in front of a saturated model only turns overload into timeouts for
everyone. With the gate, at most ``max_in_flight`` API requests (paths under ``/v1/``) are
being served at once; the next one is refused at once with 429 (``Overloaded``), Retry-After
and the standard error body, so that admitted requests keep their latency and clients back off.
Health, readiness, metrics and the web page are never refused: they must keep answering when
the API is saturated.

The gate is the outermost layer but for CORS (when configured, so that a browser can read
the 429): a refusal costs no request id, access-log line or metric
label lookup, and its answer is built once, so that under overload the CPU goes to the
admitted requests. Refusals are counted by the gate (``refused``) and, given metrics, in
``hetserve_http_requests_refused_total``, not in the per-route request counter; the requests in
flight in ``hetserve_http_requests_in_flight``.

With several workers (``--workers``), each worker has its own gate: the bound is per worker,
so the gateway as a whole serves at most ``workers x max_in_flight`` API requests at once (the
kernel hands each new connection to one worker). The metrics are summed over the workers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from hetgateway.errors import Overloaded
from hetgateway.http_errors import error_response
from hetgateway.metrics import GatewayMetrics

GUARDED_PATH_PREFIX = "/v1/"


class AdmissionGate:
    """Counts admitted requests in flight; admits while fewer than ``max_in_flight``. Given
    ``metrics``, keeps their in-flight gauge and refusal counter too.

    A worker runs one event loop, and ``try_enter``/``leave`` never await, so the count
    needs no lock.
    """

    def __init__(self, *, max_in_flight: int, metrics: GatewayMetrics | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._metrics = metrics
        self._in_flight = 0
        self._refused = 0

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered."""
        return self._in_flight

    @property
    def refused(self) -> int:
        """Requests refused since the gate was made."""
        return self._refused

    def try_enter(self) -> bool:
        """Admit one request if there is room (then the caller must ``leave``), else count a
        refusal and return False."""
        if self._in_flight >= self.max_in_flight:
            self._refused += 1
            if self._metrics is not None:
                self._metrics.refused.inc()
            return False
        self._in_flight += 1
        if self._metrics is not None:
            self._metrics.in_flight.inc()
        return True

    def leave(self) -> None:
        """Mark one admitted request as answered."""
        self._in_flight -= 1
        if self._metrics is not None:
            self._metrics.in_flight.dec()


class AdmissionMiddleware:
    """Pure ASGI middleware refusing API requests with 429 while the gate is full."""

    def __init__(self, app: ASGIApp, *, gate: AdmissionGate, retry_after_s: int) -> None:
        self.app = app
        self.gate = gate
        self._refusal = error_response(
            Overloaded(
                f"the gateway is serving its limit of {gate.max_in_flight} requests; "
                f"retry after {retry_after_s} s"
            ),
            retry_after_s=retry_after_s,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PATH_PREFIX):
            await self.app(scope, receive, send)
            return
        if not self.gate.try_enter():
            await self._refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()
