"""Stopping a background task the gateway started: cancel it, then wait until it has ended.

Typical usage::

    await cancel_and_wait(self._task)
    self._task = None
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to stop) and wait for it to end, so that nothing it
    holds outlives the caller; the ``CancelledError`` it ends with stays here."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
