"""``hetclient audit``: find the wrong labels of a labelled image set with a served model.

Typical usage::

    from hetclient.audit import AuditOptions, audit, read_labelled_images

    images = read_labelled_images("manifest.csv")   # or a folder DIR/<label>/<image>
    result = asyncio.run(audit(images, AuditOptions(url="http://127.0.0.1:8080",
                                                    model="fashion_het", output="audit.csv")))
    result.summary.estimated_wrong_share, result.files.page

Every image goes through the gateway (any gateway URL: a Kubernetes Service as well as
``make serve``), in batches of ``batch_size``, ``concurrency`` batches in flight, asking for
the full ``probs`` and, where the model serves it, the noise-free ``latent_probs``. Each
answered batch is appended to ``<output>.partial.jsonl`` at once, so an interrupted audit
started again with the same output skips what is done (``restart=True`` discards it). When
every image is scored, ``hetcontract.audit_scoring`` scores the labels and
``hetcontract.audit_report`` writes the CSV, the summary and the HTML page; the partial file is
then removed.

Inputs: a manifest CSV of ``path,label`` (header row optional; paths relative to the
manifest's folder; a label is a class id or a class name of the model) or a folder whose
sub-folders are named by class (name or id) and hold the images.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from hetcontract.audit import DEFAULT_THRESHOLD, AuditRow, AuditSummary
from hetcontract.audit_report import AuditFiles, write_audit_files

from hetclient.async_client import AsyncClient
from hetclient.base_client import DEFAULT_TIMEOUT_S
from hetclient.errors import APIStatusError, InvalidInputError
from hetclient.retries import DEFAULT_MAX_RETRIES

DEFAULT_BATCH_SIZE = 32
DEFAULT_CONCURRENCY = 4
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"})
PARTIAL_SUFFIX = ".partial.jsonl"
MANIFEST_HEADER = ("path", "label")
PROGRESS_INTERVAL_S = 0.2
PROBS = "probs"
LATENT_PROBS = "latent_probs"


class LabelledImage(NamedTuple):
    """One image file and its given label, as written (a class name or id, resolved later)."""

    path: str
    label: str


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    """How to run an audit (see the module doc)."""

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
    """Where the progress bar goes (None: no bar)."""


@dataclass(frozen=True)
class AuditResult:
    rows: list[AuditRow]
    summary: AuditSummary
    files: AuditFiles
    failed: list[tuple[str, str]]
    """Images the gateway refused (path, reason): not in the CSV."""
    resumed: int
    """Images whose answers came from the partial file of an earlier run."""
    seconds: float
    """Time spent sending images (this run)."""


# ---- inputs ---------------------------------------------------------------------------------


def read_labelled_images(source: str | os.PathLike[str]) -> list[LabelledImage]:
    """A manifest CSV or a class-per-folder directory as (path, label) pairs, in a stable
    order (``InvalidInputError`` when it holds none or cannot be read)."""
    path = Path(source)
    images = _read_folder(path) if path.is_dir() else _read_manifest(path)
    if not images:
        raise InvalidInputError(f"{path} holds no labelled images")
    return images


def _read_manifest(path: Path) -> list[LabelledImage]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidInputError(f"cannot read manifest {str(path)!r}: {exc.strerror}") from exc
    rows = [row for row in csv.reader(text.splitlines()) if row and any(c.strip() for c in row)]
    if rows and tuple(c.strip().lower() for c in rows[0][:2]) == MANIFEST_HEADER:
        rows = rows[1:]
    images = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InvalidInputError(f"{path}: row {number} is not 'path,label': {row}")
        file = Path(row[0].strip())
        if not file.is_absolute():
            file = path.parent / file
        images.append(LabelledImage(str(file), row[1].strip()))
    return images


def _read_folder(path: Path) -> list[LabelledImage]:
    return [
        LabelledImage(str(file), class_dir.name)
        for class_dir in sorted(p for p in path.iterdir() if p.is_dir())
        for file in sorted(class_dir.iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
    ]


def resolve_labels(images: Sequence[LabelledImage], labels: Sequence[str]) -> list[int]:
    """Each image's label as a class id: an exact class name, else an integer id in range."""
    by_name = {name: index for index, name in enumerate(labels)}
    ids = []
    for image in images:
        if image.label in by_name:
            ids.append(by_name[image.label])
        elif image.label.isdigit() and int(image.label) < len(labels):
            ids.append(int(image.label))
        else:
            raise InvalidInputError(
                f"{image.path}: label {image.label!r} is neither a class of the model "
                f"({', '.join(labels)}) nor a class id 0..{len(labels) - 1}"
            )
    return ids


# ---- resumable answers ----------------------------------------------------------------------


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def load_partial(path: Path, *, model: str, include: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Answers an earlier run of the same audit stored (by image path); {} when there is no
    file. ``InvalidInputError`` when it was written for another model or other outputs."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    header = json.loads(lines[0])
    if header.get("model") != model or header.get("include") != list(include):
        raise InvalidInputError(
            f"{path} holds answers of model {header.get('model')!r} "
            f"({header.get('include')}); use --restart to discard it"
        )
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of an interrupted write
            continue
        done[record["path"]] = record
    return done


class _PartialWriter:
    """Appends answered images to the partial file, one JSON line each, flushed per batch."""

    def __init__(self, path: Path, *, model: str, include: Sequence[str], fresh: bool) -> None:
        self._handle = path.open("w" if fresh else "a", encoding="utf-8")
        if fresh:
            self._write({"model": model, "include": list(include)})

    def add(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._write(record)
        self._handle.flush()

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._handle.close()


# ---- progress -------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on ``stream``: done/total, percent, images per second."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None, *, done: int = 0) -> None:
        self.total, self.done, self._stream = total, done, stream
        self._start = time.perf_counter()
        self._first = done
        self._last_draw = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self._last_draw >= PROGRESS_INTERVAL_S or self.done >= self.total:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self._stream is None:
            return
        share = self.done / self.total if self.total else 1.0
        filled = int(share * self.WIDTH)
        rate = (self.done - self._first) / max(now - self._start, 1e-9)
        self._stream.write(
            f"\raudit [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
            f"({100 * share:.0f} %) {rate:.0f} img/s"
        )
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._draw(time.perf_counter())
            self._stream.write("\n")
            self._stream.flush()


# ---- the audit ------------------------------------------------------------------------------


async def audit(images: Sequence[LabelledImage], options: AuditOptions) -> AuditResult:
    """Send every image not yet answered, score the labels, write the files (module doc)."""
    if options.batch_size < 1 or options.concurrency < 1:
        raise ValueError("batch_size and concurrency must be >= 1")
    async with AsyncClient(options.url, timeout_s=options.timeout_s,
                           max_retries=options.max_retries, api_key=options.api_key) as client:
        model = await _model(client, options.model)
        given = resolve_labels(images, model.labels)
        include = [PROBS] + ([LATENT_PROBS] if LATENT_PROBS in model.extra_outputs else [])
        partial = partial_path(options.output)
        if options.restart and partial.exists():
            partial.unlink()
        done = load_partial(partial, model=model.name, include=include)
        todo = list(dict.fromkeys(image.path for image in images if image.path not in done))
        resumed = len(done)
        writer = _PartialWriter(partial, model=model.name, include=include, fresh=not done)
        progress = Progress(len(done) + len(todo), options.progress, done=len(done))
        started = time.perf_counter()
        try:
            failed = await _send_all(client, todo, model.name, include, options,
                                     on_batch=lambda records: _keep(records, done, writer,
                                                                    progress))
        finally:
            writer.close()
            progress.close()
        seconds = time.perf_counter() - started
    return _finish(images, given, done, failed, model, include, options, seconds,
                   resumed=resumed)


def _keep(records: list[dict[str, Any]], done: dict[str, dict[str, Any]],
          writer: _PartialWriter, progress: Progress) -> None:
    writer.add(records)
    for record in records:
        done[record["path"]] = record
    progress.advance(len(records))


async def _model(client: AsyncClient, name: str | None) -> Any:
    if name is None:
        name = (await client.models()).default_model
        if name is None:
            raise InvalidInputError("the gateway has no default model: give --model")
    return await client.model(name)


async def _send_all(
    client: AsyncClient, paths: list[str], model: str, include: list[str],
    options: AuditOptions, *, on_batch: Callable[[list[dict[str, Any]]], None],
) -> list[tuple[str, str]]:
    """Every path through the gateway, ``concurrency`` batches at a time; the images the
    gateway refuses (path, reason)."""
    batches = [paths[i : i + options.batch_size] for i in range(0, len(paths), options.batch_size)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    failed: list[tuple[str, str]] = []

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            records, refused = await _send_batch(client, batch, model, include)
            failed.extend(refused)
            on_batch(records)

    await asyncio.gather(*(worker() for _ in range(min(options.concurrency, len(batches)))))
    return failed


async def _send_batch(
    client: AsyncClient, batch: list[str], model: str, include: list[str]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """One batch's answers as records; where the gateway refuses the batch (a 4xx: one image
    it cannot read), each image is sent alone so that only the bad ones are left out."""
    try:
        answer = await client.predict(batch, model=model, top_k=1, include=include)
    except (APIStatusError, InvalidInputError) as exc:
        status = getattr(exc, "status_code", 400)
        if len(batch) == 1 or status >= 500:
            if status >= 500:
                raise
            return [], [(batch[0], str(exc))]
        records, failed = [], []
        for path in batch:
            got, refused = await _send_batch(client, [path], model, include)
            records += got
            failed += refused
        return records, failed
    return [
        {"path": path, PROBS: result.probs, LATENT_PROBS: result.latent_probs}
        for path, result in zip(batch, answer.results, strict=True)
    ], []


def _finish(
    images: Sequence[LabelledImage], given: list[int], done: dict[str, dict[str, Any]],
    failed: list[tuple[str, str]], model: Any, include: list[str], options: AuditOptions,
    seconds: float, *, resumed: int,
) -> AuditResult:
    import numpy as np
    from hetcontract.audit_scoring import run_audit

    kept = [(image, label) for image, label in zip(images, given, strict=True)
            if image.path in done]
    if not kept:
        raise InvalidInputError("the gateway answered for none of the images")
    records = [done[image.path] for image, _ in kept]
    latent = None
    if LATENT_PROBS in include:
        latent = np.array([record[LATENT_PROBS] for record in records], dtype=np.float64)
    rows, summary = run_audit(
        [image.path for image, _ in kept],
        np.array([label for _, label in kept]),
        list(model.labels),
        noisy_probs=np.array([record[PROBS] for record in records], dtype=np.float64),
        clean_probs=latent,
        model=model.name,
        threshold=options.threshold,
    )
    files = write_audit_files(options.output, rows, summary)
    partial_path(options.output).unlink(missing_ok=True)
    return AuditResult(rows, summary, files, failed, resumed, seconds)


def progress_stream() -> TextIO | None:
    """stderr when it is a terminal, else None (no bar in logs and pipes)."""
    return sys.stderr if sys.stderr.isatty() else None
