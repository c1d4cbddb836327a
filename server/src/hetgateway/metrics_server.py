"""``/metrics`` on a port of its own (``HETSERVE_METRICS_PORT``), as Triton serves its metrics on
8002: the gateway's public port then serves no metrics, API keys do not apply to the scrape,
and a NetworkPolicy (or a firewall) can open the metrics port to Prometheus alone.

The server is prometheus_client's exposition server (a threaded HTTP server on a daemon
thread), bound to the gateway's address, serving one registry: in one process, the app's
registry; with several workers, the parent serves it, reading every worker's files
(``hetgateway.metrics.multiprocess_registry``), so one scrape sees the sum over the workers
whichever of them answered the requests. It answers every path (``/metrics`` included) and
stops when the gateway stops.

Typical usage (in ``run_gateway``)::

    with serving_metrics(settings, registry) as port:   # port None: not asked for
        server.run()
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, start_http_server

from hetgateway.settings import GatewaySettings

_LOG = logging.getLogger(__name__)


@contextmanager
def serving_metrics(
    settings: GatewaySettings, registry: CollectorRegistry
) -> Iterator[int | None]:
    """Serve ``registry`` on ``settings.metrics_port`` (at ``settings.host``) for the block;
    yields the port, or None when no metrics port is set (nothing is started). A port that
    cannot be bound raises ``OSError`` before the block runs."""
    if settings.metrics_port is None:
        yield None
        return
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.host, registry=registry
    )
    _LOG.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    try:
        yield settings.metrics_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
