"""The OpenAPI document, with the request schemas that routes reference by hand.

The predict routes read their bodies themselves (JSON or multipart), so FastAPI does not see
``PredictRequest``; its schema is added to ``components.schemas`` here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from hetcontract import PredictRequest

_REF_TEMPLATE = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` include ``PredictRequest`` and the models it refers to."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            request_schema = PredictRequest.model_json_schema(ref_template=_REF_TEMPLATE)
            schemas.update(request_schema.pop("$defs", {}))
            schemas["PredictRequest"] = request_schema
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
