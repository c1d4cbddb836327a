"""``hetclient audit``: find the wrong labels of a labelled image set with a served model.

Typical usage::

    from hetclient.audit import AuditOptions, read_labelled_images
    from hetclient.audit.runner import audit

    images = read_labelled_images("manifest.csv")   # or a folder DIR/<label>/<image>
    result = asyncio.run(audit(images, AuditOptions(url="http://127.0.0.1:8080",
                                                    model="fashion_het",
                                                    output=Path("audit.csv"))))
    result.summary.estimated_wrong_share, result.files.page

Every image goes through the gateway (any gateway URL: ``make serve``, a Kubernetes Service,
a path behind an ingress), in batches of ``batch_size``, ``concurrency`` batches in flight,
asking for the full ``probs`` and, where the model serves it, the noise-free ``latent_probs``
(``top_k`` 1: the rest of the answer is not needed). Each answered batch is appended to the
answers file (``hetclient.audit.answers``) at once, so an audit started again with the same
output after an interruption sends only what is left (``restart=True`` discards the file).
When every image is answered, ``hetcontract.audit_scoring`` scores the labels and
``hetcontract.audit_report`` writes the CSV, the summary, the HTML page and the PNG sheet; the
answers file is then removed. Images the gateway refuses (not an image, too large) are left
out and reported; any other error stops the audit with its answers kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from hetcontract import ModelDetail
from hetcontract.audit import AuditRow, AuditSummary
from hetcontract.audit_report import AuditFiles, write_audit_files
from hetcontract.audit_scoring import run_audit

from hetclient.async_client import AsyncClient
from hetclient.audit.answers import (
    Answer,
    AnswersHeader,
    AnswersWriter,
    answers_path,
    read_answers,
)
from hetclient.audit.labelled_images import LabelledImage, resolve_labels
from hetclient.audit.options import AuditOptions
from hetclient.audit.progress import ProgressBar
from hetclient.errors import APIStatusError, InvalidInputError

PROBS = "probs"
LATENT_PROBS = "latent_probs"
CALLER_ERROR_STATUSES = range(400, 500)
"""A batch refused with one of these is retried image by image (one bad image refuses it)."""


@dataclass(frozen=True)
class AuditResult:
    """What an audit did: its rows (input order, refused images left out), summary and files;
    ``failed`` (path, reason) of the images the gateway refused; ``resumed`` how many answers
    came from an interrupted run; ``sent`` how many images this run sent and ``seconds`` the
    time it took (images per second: ``sent / seconds``)."""

    rows: list[AuditRow]
    summary: AuditSummary
    files: AuditFiles
    failed: list[tuple[str, str]]
    resumed: int
    sent: int
    seconds: float


async def audit(images: Sequence[LabelledImage], options: AuditOptions) -> AuditResult:
    """Send every image not answered yet, score the labels, write the files (module doc)."""
    async with AsyncClient(options.url, timeout_s=options.timeout_s,
                           max_retries=options.max_retries, api_key=options.api_key) as client:
        model = await _model(client, options.model)
        given = resolve_labels(images, model.labels)
        include = [PROBS] + ([LATENT_PROBS] if LATENT_PROBS in model.extra_outputs else [])
        header = AnswersHeader(model=model.name, version=model.version, include=include)
        path = answers_path(options.output)
        if options.restart:
            path.unlink(missing_ok=True)
        wanted = list(dict.fromkeys(image.path for image in images))
        stored = read_answers(path, header)
        done = {p: stored[p] for p in wanted if p in stored}
        todo = [p for p in wanted if p not in done]
        bar = ProgressBar(len(wanted), options.progress, done=len(done))
        started = time.perf_counter()
        with AnswersWriter(path, header, fresh=not stored) as writer:
            try:
                failed = await _send_all(client, todo, model.name, include, options,
                                         on_batch=lambda answers: _keep(answers, done, writer,
                                                                        bar))
            finally:
                bar.close()
        seconds = time.perf_counter() - started
    rows, summary, files = _score(images, given, done, model, options)
    path.unlink(missing_ok=True)
    return AuditResult(rows, summary, files, failed, resumed=len(wanted) - len(todo),
                       sent=len(todo), seconds=seconds)


async def _model(client: AsyncClient, name: str | None) -> ModelDetail:
    if name is None:
        name = (await client.models()).default_model
        if name is None:
            raise InvalidInputError("the gateway has no default model: give --model")
    return await client.model(name)


def _keep(answers: list[Answer], done: dict[str, Answer], writer: AnswersWriter,
          bar: ProgressBar) -> None:
    writer.add(answers)
    done.update((answer.path, answer) for answer in answers)
    bar.advance(len(answers))


async def _send_all(
    client: AsyncClient, paths: list[str], model: str, include: list[str],
    options: AuditOptions, *, on_batch: Callable[[list[Answer]], None],
) -> list[tuple[str, str]]:
    """Every path through the gateway, ``concurrency`` batches at a time; the images the
    gateway refused (path, reason)."""
    starts = range(0, len(paths), options.batch_size)
    pending = (paths[start : start + options.batch_size] for start in starts)  # one, shared
    failed: list[tuple[str, str]] = []

    async def worker() -> None:
        for batch in pending:  # each worker takes the next batch not taken yet
            answers, refused = await _send_batch(client, batch, model, include)
            failed.extend(refused)
            on_batch(answers)

    await asyncio.gather(*(worker() for _ in range(min(options.concurrency, len(starts)))))
    return failed


async def _send_batch(
    client: AsyncClient, batch: list[str], model: str, include: list[str]
) -> tuple[list[Answer], list[tuple[str, str]]]:
    """One batch's answers; where the gateway refuses the batch as the caller's mistake (a
    4xx: one image it cannot read refuses all), each image is sent alone so that only the bad
    ones are left out. A file the SDK cannot read is refused the same way."""
    try:
        answer = await client.predict(batch, model=model, top_k=1, include=include)
    except (APIStatusError, InvalidInputError) as exc:
        status = exc.status_code if isinstance(exc, APIStatusError) else 400
        if status not in CALLER_ERROR_STATUSES:
            raise
        if len(batch) == 1:
            return [], [(batch[0], str(exc))]
        answers: list[Answer] = []
        failed: list[tuple[str, str]] = []
        for path in batch:
            got, refused = await _send_batch(client, [path], model, include)
            answers += got
            failed += refused
        return answers, failed
    return [
        Answer(path=path, probs=result.probs, latent_probs=result.latent_probs)
        for path, result in zip(batch, answer.results, strict=True)
    ], []


def _score(
    images: Sequence[LabelledImage], given: list[int], done: dict[str, Answer],
    model: ModelDetail, options: AuditOptions,
) -> tuple[list[AuditRow], AuditSummary, AuditFiles]:
    kept = [(image.path, label) for image, label in zip(images, given, strict=True)
            if image.path in done]
    if not kept:
        raise InvalidInputError("the gateway answered for none of the images")
    answers = [done[path] for path, _ in kept]
    latent = None
    if all(answer.latent_probs is not None for answer in answers):
        latent = np.array([answer.latent_probs for answer in answers], dtype=np.float64)
    rows, summary = run_audit(
        [path for path, _ in kept],
        np.array([label for _, label in kept], dtype=np.int64),
        list(model.labels),
        noisy_probs=np.array([answer.probs for answer in answers], dtype=np.float64),
        clean_probs=latent,
        model=model.name,
        threshold=options.threshold,
    )
    return rows, summary, write_audit_files(options.output, rows, summary)
