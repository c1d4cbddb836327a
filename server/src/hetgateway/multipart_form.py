"""A ``multipart/form-data`` body parsed in memory: its file parts' bytes and its text fields.

Typical usage::

    form = parse_multipart(body, request.headers["content-type"], max_files=65, max_fields=16)
    images = [part.data for part in form.files if part.name == "images"]
    top_k = form.fields.get("top_k")

The body has already been read whole (bounded by the body limit), so the parts are sliced out
of it by python-multipart's parser into bytes, with the rules of Starlette's form parser (a part
with a ``filename`` parameter is a file, any other a text field; every part needs a ``name``;
at most ``max_files`` files, ``max_fields`` fields and ``max_field_bytes`` per field), but
without a spooled temporary file and an ``UploadFile`` per image, which cost the gateway more
than decoding a small PNG. Any malformed body raises ``MalformedRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from hetgateway.errors import MalformedRequest

MAX_FIELD_BYTES = 1024 * 1024
"""Largest text field (Starlette's limit too)."""

_CONTENT_DISPOSITION = b"content-disposition"
_DEFAULT_CHARSET = "utf-8"


@dataclass(frozen=True)
class FilePart:
    """One file part: its field name, its file name (may be empty) and its bytes."""

    name: str
    filename: str
    data: bytes


@dataclass(frozen=True)
class MultipartForm:
    """The parts of a form: file parts in order, text fields by name (the last one wins)."""

    files: list[FilePart]
    fields: dict[str, str]


def parse_multipart(
    body: bytes,
    content_type: str,
    *,
    max_files: int,
    max_fields: int,
    max_field_bytes: int = MAX_FIELD_BYTES,
) -> MultipartForm:
    """Parse ``body`` as the ``multipart/form-data`` its ``content_type`` header announces."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedRequest("multipart body without a boundary in its Content-Type")
    charset = params.get(b"charset", _DEFAULT_CHARSET.encode()).decode("latin-1")
    reader = _PartCollector(
        charset=charset, max_files=max_files, max_fields=max_fields,
        max_field_bytes=max_field_bytes,
    )
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise MalformedRequest(f"invalid multipart body: {exc}") from exc
    return MultipartForm(files=reader.files, fields=reader.fields)


@dataclass
class _Part:
    disposition: bytes = b""
    name: str = ""
    filename: str | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class _PartCollector:
    """python-multipart's callbacks, collecting the parts of one body."""

    def __init__(self, *, charset: str, max_files: int, max_fields: int,
                 max_field_bytes: int) -> None:
        self._charset = charset
        self._max_files = max_files
        self._max_fields = max_fields
        self._max_field_bytes = max_field_bytes
        self.files: list[FilePart] = []
        self.fields: dict[str, str] = {}
        self._field_count = 0
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self._charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == _CONTENT_DISPOSITION:
            self._part.disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        if b"name" not in options:
            raise MalformedRequest('a multipart part lacks the Content-Disposition "name"')
        self._part.name = self._decode(options[b"name"])
        if b"filename" in options:
            self._part.filename = self._decode(options[b"filename"])
            if len(self.files) >= self._max_files:
                raise MalformedRequest(
                    f"Too many files. Maximum number of files is {self._max_files}."
                )
        else:
            self._field_count += 1
            if self._field_count > self._max_fields:
                raise MalformedRequest(
                    f"Too many fields. Maximum number of fields is {self._max_fields}."
                )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.size += end - start
        if part.filename is None and part.size > self._max_field_bytes:
            raise MalformedRequest(
                f"multipart field {part.name!r} exceeds {self._max_field_bytes} bytes"
            )
        part.chunks.append(data[start:end])

    def _on_part_end(self) -> None:
        part = self._part
        data = part.chunks[0] if len(part.chunks) == 1 else b"".join(part.chunks)
        if part.filename is None:
            self.fields[part.name] = self._decode(data)
        else:
            self.files.append(FilePart(name=part.name, filename=part.filename, data=data))
