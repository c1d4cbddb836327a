"""How an audit runs through a gateway: ``AuditOptions`` and its defaults (no numpy needed,
so the CLI can build its parser without the ``audit`` extra installed).

Typical usage::

    options = AuditOptions(url="http://hetserve.ml.svc:8080", output=Path("audit.csv"),
                           model="fashion_het", batch_size=32, concurrency=8)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hetcontract.audit import DEFAULT_THRESHOLD

from hetclient.base_client import DEFAULT_TIMEOUT_S
from hetclient.retries import DEFAULT_MAX_RETRIES

DEFAULT_BATCH_SIZE = 32
"""Images per request."""
DEFAULT_CONCURRENCY = 4
"""Requests in flight (the gateway merges concurrent ones into fewer Triton calls)."""


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    """Where and how to send the images, and where the results go.

    ``url`` any gateway (``make serve``, a Kubernetes Service, an ingress path prefix);
    ``model`` None for the gateway's default; ``output`` the audit CSV (its summary, page and
    answers file go beside it); ``threshold`` flags labels whose P(wrong) exceeds it (default: the
    Bayes decision, ``hetcontract.audit.DEFAULT_THRESHOLD``); ``restart`` discards the answers of
    an interrupted run instead of resuming; ``progress`` where the bar goes (None: no bar)."""

    url: str
    output: Path
    model: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    threshold: float = DEFAULT_THRESHOLD
    restart: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    api_key: str | None = None
    progress: TextIO | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("batch_size and concurrency must be >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
