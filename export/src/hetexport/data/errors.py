"""Errors raised while reading training data."""

from __future__ import annotations

from hetexport.errors import HetExportError


class DataError(HetExportError, ValueError):
    """A dataset is missing, unreadable or malformed; the message says which file and why."""
