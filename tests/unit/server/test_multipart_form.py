"""Multipart bodies parsed in memory give the files and fields Starlette's form parser gives for
the same body, and broken or over-limit bodies are malformed requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hetgateway.errors import MalformedRequest
from hetgateway.multipart_form import parse_multipart
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser


def encoded(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, str]):
    """Body and Content-Type as httpx (the SDK's client) encodes them."""
    request = httpx.Request("POST", "http://gw/", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def _starlette(body: bytes, content_type: str) -> tuple[list, dict]:
    async def stream():
        yield body

    form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
    files = [(name, value.filename, await value.read()) for name, value in form.multi_items()
             if isinstance(value, UploadFile)]
    fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
    return files, fields


CASES = {
    "one image": ([("images", ("a.png", b"\x89PNG\r\n" + bytes(range(256)), "image/png"))], {}),
    "two images and top_k": (
        [("images", ("a.png", b"first", "image/png")), ("images", ("b.jpg", b"\r\n--x", "x/y"))],
        {"top_k": "3"},
    ),
    "other file and text fields": (
        [("other", ("o.bin", b"zzz", "application/octet-stream"))], {"a": "1", "b": "é"}),
    "empty file": ([("images", ("", b"", "image/png"))], {}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_parts_equal_starlettes_form_parser(case):
    files, data = CASES[case]
    body, content_type = encoded(files, data)
    form = parse_multipart(body, content_type, max_files=8, max_fields=8)
    expected_files, expected_fields = asyncio.run(_starlette(body, content_type))
    assert [(p.name, p.filename, p.data) for p in form.files] == expected_files
    assert form.fields == expected_fields


def test_more_files_than_allowed_is_malformed():
    body, content_type = encoded([("images", (f"{i}.png", b"x", "image/png")) for i in range(3)],
                                 {})
    with pytest.raises(MalformedRequest, match="Too many files"):
        parse_multipart(body, content_type, max_files=2, max_fields=8)


def test_more_fields_than_allowed_is_malformed():
    body, content_type = encoded([("images", ("a.png", b"x", "image/png"))],
                                 {f"f{i}": "v" for i in range(3)})
    with pytest.raises(MalformedRequest, match="Too many fields"):
        parse_multipart(body, content_type, max_files=2, max_fields=2)


def test_an_oversize_text_field_is_malformed():
    body, content_type = encoded([("images", ("a.png", b"x", "image/png"))], {"top_k": "9" * 64})
    with pytest.raises(MalformedRequest, match="exceeds"):
        parse_multipart(body, content_type, max_files=2, max_fields=2, max_field_bytes=16)


WITH_BOUNDARY = "multipart/form-data; boundary=b"


@pytest.mark.parametrize(("body", "content_type"), [
    (b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n", WITH_BOUNDARY),
    (b"no parts here", "multipart/form-data"),
    (b"--b\r\nbroken header line without colon\r\n\r\n", WITH_BOUNDARY),
], ids=["part without a name", "no boundary", "broken part headers"])
def test_broken_bodies_are_malformed(body, content_type):
    with pytest.raises(MalformedRequest):
        parse_multipart(body, content_type, max_files=2, max_fields=2)
