"""When to retry and how long to wait: exponential backoff with jitter, honouring Retry-After.

The n-th retry (n = 0, 1, ...) waits ``min(INITIAL_RETRY_DELAY_S * 2**n, MAX_RETRY_DELAY_S)``
scaled by a jitter factor drawn uniformly from ``[1 - JITTER_FRACTION, 1]``, so clients that
failed together do not come back together. When the gateway sends ``Retry-After`` (seconds or
an HTTP date, RFC 9110 section 10.2.3) the SDK waits that long instead, capped at
``MAX_RETRY_AFTER_S``.
"""

from __future__ import annotations

import email.utils
import random
from datetime import UTC, datetime

from hetcontract import RETRYABLE_STATUSES

DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0
JITTER_FRACTION = 0.25
RETRYABLE_STATUS_CODES = RETRYABLE_STATUSES
"""Too Many Requests and Service Unavailable: the gateway says "later", not "never" (the
contract's ``RETRYABLE_STATUSES``)."""


def backoff_delay_s(retry_index: int, *, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``retry_index`` (0-based), jittered (see module docstring)."""
    if retry_index < 0:
        raise ValueError("retry_index must be >= 0")
    base = min(INITIAL_RETRY_DELAY_S * 2.0**retry_index, MAX_RETRY_DELAY_S)
    draw = (rng or random).random()
    return base * (1.0 - JITTER_FRACTION * draw)


def parse_retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None when absent or
    unreadable. Never negative, capped at ``MAX_RETRY_AFTER_S``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
