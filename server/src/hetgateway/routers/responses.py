"""OpenAPI descriptions of the error answers routes can give (all ``ErrorResponse``; what each
status means is the contract's, ``hetcontract.errors``)."""

from __future__ import annotations

from typing import Any

from hetcontract import ErrorResponse, status_meaning


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` argument documenting these error statuses."""
    return {
        status: {"model": ErrorResponse, "description": status_meaning(status)}
        for status in statuses
    }
