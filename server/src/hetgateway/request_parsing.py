"""Read a predict request's body, JSON or multipart, into plain ``PredictInput`` items.

JSON: ``hetcontract.PredictRequest`` (``{"inputs": [{"image": b64} | {"tensor": [...]}],
"top_k": 5, "include": ["probs"], "coverage": 0.95, "risk": 0.02}``). Multipart: one or more
``images`` file parts and optional ``top_k``, ``include`` (comma-separated), ``coverage`` and
``risk`` fields, parsed in memory (``hetgateway.multipart_form``). Whether a coverage or risk is
one the model offers is the data plane's question (it knows the model's card).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from fastapi import Request
from hetcontract import ExtraOutput, ImageInput, PredictRequest
from pydantic import ValidationError

from hetgateway.errors import (
    GatewayError,
    InvalidInput,
    MalformedRequest,
    UnsupportedMediaType,
)
from hetgateway.http_errors import describe_validation
from hetgateway.inputs import EncodedImage, PredictInput, RawTensor
from hetgateway.multipart_form import parse_multipart
from hetgateway.preprocessing import decode_base64

EXTRA_OUTPUTS: tuple[str, ...] = get_args(ExtraOutput)
JSON_MEDIA_TYPE = "application/json"
MULTIPART_MEDIA_TYPE = "multipart/form-data"
IMAGES_FIELD = "images"
TOP_K_FIELD = "top_k"
INCLUDE_FIELD = "include"
COVERAGE_FIELD = "coverage"
RISK_FIELD = "risk"
MAX_FORM_FIELDS = 16
"""Non-file multipart fields accepted (``top_k``, ``include``, ``coverage`` and ``risk`` are
the ones used)."""


@dataclass(frozen=True)
class ParsedPredict:
    """A predict request without its HTTP framing; ``top_k``, ``coverage`` and ``risk`` None:
    the model's defaults."""

    inputs: list[PredictInput]
    top_k: int | None
    include: tuple[str, ...] = ()
    """Per-class vectors asked for beyond the default answer (``hetcontract.ExtraOutput``)."""
    coverage: float | None = None
    risk: float | None = None


async def read_predict_request(request: Request, *, max_inputs: int) -> ParsedPredict:
    """Parse the body by its Content-Type; ``MalformedRequest`` / ``UnsupportedMediaType`` /
    ``InvalidInput`` on bad bodies."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == MULTIPART_MEDIA_TYPE:
        return _parse_multipart(await request.body(), content_type, max_inputs=max_inputs)
    if media_type == JSON_MEDIA_TYPE or media_type.endswith("+json"):
        return _parse_json(await request.body())
    if not media_type and not await request.body():
        raise MalformedRequest("empty body: send JSON or multipart 'images' files")
    raise UnsupportedMediaType(
        f"Content-Type {media_type or '(none)'!r} is not accepted; use "
        f"{JSON_MEDIA_TYPE} or {MULTIPART_MEDIA_TYPE}"
    )


def _parse_json(body: bytes) -> ParsedPredict:
    if not body.strip():
        raise MalformedRequest("empty body: expected a JSON object with 'inputs'")
    try:
        parsed = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            raise MalformedRequest(
                f"body is not valid JSON: {describe_validation(errors)}"
            ) from exc
        raise InvalidInput(describe_validation(errors)) from exc
    inputs: list[PredictInput] = []
    for index, item in enumerate(parsed.inputs):
        origin = f"inputs[{index}]"
        if isinstance(item, ImageInput):
            inputs.append(EncodedImage(_base64(item.image, origin=origin), origin=origin))
        else:
            inputs.append(RawTensor(list(item.tensor), origin=origin))
    top_k = parsed.top_k if "top_k" in parsed.model_fields_set else None
    return ParsedPredict(inputs=inputs, top_k=top_k, include=tuple(dict.fromkeys(parsed.include)),
                         coverage=parsed.coverage, risk=parsed.risk)


def _parse_multipart(body: bytes, content_type: str, *, max_inputs: int) -> ParsedPredict:
    form = parse_multipart(
        body, content_type, max_files=max_inputs + 1, max_fields=MAX_FORM_FIELDS
    )
    inputs: list[PredictInput] = [
        EncodedImage(part.data, origin=f"images[{i}] ({part.filename or 'unnamed'})")
        for i, part in enumerate(p for p in form.files if p.name == IMAGES_FIELD)
    ]
    if not inputs:
        raise InvalidInput(f"multipart body holds no '{IMAGES_FIELD}' files")
    return ParsedPredict(
        inputs=inputs,
        top_k=_form_top_k(form.fields.get(TOP_K_FIELD)),
        include=_form_include(form.fields.get(INCLUDE_FIELD)),
        coverage=_form_level(form.fields.get(COVERAGE_FIELD), COVERAGE_FIELD),
        risk=_form_level(form.fields.get(RISK_FIELD), RISK_FIELD),
    )


def _form_include(value: object) -> tuple[str, ...]:
    """``include`` as a multipart field: names separated by commas (``probs,latent_probs``)."""
    if value is None:
        return ()
    names = [name.strip() for name in str(value).split(",") if name.strip()]
    unknown = [name for name in names if name not in EXTRA_OUTPUTS]
    if unknown:
        raise InvalidInput(
            f"include accepts {', '.join(EXTRA_OUTPUTS)}; got {', '.join(unknown)[:64]!r}"
        )
    return tuple(dict.fromkeys(names))


def _form_top_k(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError as exc:
        raise InvalidInput(f"top_k must be an integer; got {str(value)[:32]!r}") from exc


def _form_level(value: object, name: str) -> float | None:
    """A ``coverage`` or ``risk`` form field: a number strictly between 0 and 1."""
    if value is None:
        return None
    try:
        level = float(str(value))
    except ValueError as exc:
        raise InvalidInput(f"{name} must be a number; got {str(value)[:32]!r}") from exc
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"{name} must lie strictly between 0 and 1; got {level:g}")
    return level


def _base64(text: str, *, origin: str) -> bytes:
    try:
        return decode_base64(text)
    except GatewayError as exc:
        raise type(exc)(f"{origin}: {exc}") from exc
