"""The gateway's drain on SIGTERM: not ready first, still serving, then uvicorn's graceful stop.

Kubernetes sends a pod SIGTERM and removes it from its Service's endpoints at the same time,
in no set order, and kube-proxy, ingresses and DNS caches learn of the removal later still.
So on SIGTERM the gateway:

1. answers ``/readyz`` with 503 ``shutting_down`` (whatever still probes it stops sending)
   and closes each connection after its answer (``Connection: close``: a keep-alive client
   opens a new connection, which the Service sends to another gateway);
2. keeps serving for ``drain_s`` (``HETSERVE_DRAIN_S``);
3. then hands the signal to uvicorn, which stops accepting, closes idle connections, waits up
   to ``shutdown_timeout_s`` for the requests in flight, runs the lifespan's shutdown (the
   Triton channels close) and exits.

A second SIGTERM, or SIGINT (Ctrl-C), ends the drain at once. With several workers, uvicorn's
parent process passes SIGTERM to each worker, and each drains the same way.

How: uvicorn installs its own handlers with ``signal.signal`` before it runs the lifespan, so
``install`` (at lifespan startup, in the main thread) puts ``ShutdownDrain`` in front of
uvicorn's SIGTERM handler and calls that handler once the drain is over. The signal handler
only records the time (nothing that takes a lock runs in it); a task of the event loop logs,
waits out the drain and hands over.

Typical usage (the app's lifespan)::

    drain = ShutdownDrain(drain_s=settings.drain_s)
    drain.install()                 # SIGTERM now drains first
    ...                             # /readyz: if drain.draining: raise ShuttingDown(...)
    await drain.close()
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from hetgateway.background_task import cancel_and_wait

DRAIN_POLL_S = 0.1
"""How often the event loop looks whether SIGTERM arrived (uvicorn's own tick)."""

_LOG = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], object]


class ShutdownDrain:
    """Whether the gateway is draining, and the SIGTERM handler that starts it."""

    def __init__(self, *, drain_s: float) -> None:
        self.drain_s = drain_s
        self._since: float | None = None
        self._handover: SignalHandler | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """Whether SIGTERM arrived: readiness is false and connections close after answers."""
        return self._since is not None

    def install(self) -> bool:
        """Drain on SIGTERM before the handler installed now (uvicorn's) runs; False, and
        nothing changed, where no Python handler is there to hand over to or this is not the
        main thread (an app served in a test client)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return False
        self._handover = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._task = asyncio.get_running_loop().create_task(self._drain_then_hand_over())
        return True

    def begin(self) -> None:
        """Start draining now (what SIGTERM does)."""
        if self._since is None:
            self._since = time.monotonic()

    async def close(self) -> None:
        """Stop waiting for SIGTERM (the lifespan's shutdown)."""
        await cancel_and_wait(self._task)
        self._task = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        again = self.draining
        self.begin()
        if again or self.drain_s <= 0:  # a second SIGTERM, or no drain: stop now
            self._hand_over(signum, frame)

    async def _drain_then_hand_over(self) -> None:
        while self._since is None:
            await asyncio.sleep(DRAIN_POLL_S)
        if self.drain_s > 0:
            _LOG.warning("SIGTERM: not ready, serving on for %.1f s before shutting down",
                         self.drain_s)
            await asyncio.sleep(max(0.0, self._since + self.drain_s - time.monotonic()))
        self._hand_over(signal.SIGTERM, None)

    def _hand_over(self, signum: int, frame: FrameType | None) -> None:
        handover, self._handover = self._handover, None
        if handover is not None:
            handover(signum, frame)
