"""The answers file that makes an audit resumable: ``<output>.partial.jsonl`` (one writer, one
reader).

Typical usage::

    path = answers_path(Path("audit.csv"))                  # audit.csv.partial.jsonl
    done = read_answers(path, AnswersHeader(model="fashion_het", version="1",
                                            include=["probs", "latent_probs"]))
    with AnswersWriter(path, header, fresh=not done) as writer:
        writer.add([Answer(path="a.png", probs=[...], latent_probs=[...])])

The first line is the header (the model, its version and the outputs asked for): answers of
another model, version or set of outputs are never mixed into an audit (the reader refuses
them; ``hetclient audit --restart`` discards the file). Then one JSON line per answered image,
flushed after each batch, so an interruption loses at most the batches in flight; a last line
cut off by the interruption is skipped.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from pydantic import BaseModel, ConfigDict, ValidationError

from hetclient.errors import InvalidInputError

ANSWERS_SUFFIX = ".partial.jsonl"


class AnswersHeader(BaseModel):
    """What the answers of a file were asked from."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str
    version: str
    include: list[str]


class Answer(BaseModel):
    """One image's answer: its full probabilities and, when served, the noise-free ones."""

    model_config = ConfigDict(frozen=True)

    path: str
    probs: list[float]
    latent_probs: list[float] | None = None


def answers_path(output: Path) -> Path:
    """``audit.csv`` -> ``audit.csv.partial.jsonl``."""
    return output.with_name(output.name + ANSWERS_SUFFIX)


def read_answers(path: Path, header: AnswersHeader) -> dict[str, Answer]:
    """The answers an earlier run stored, by image path; {} when there is no file (or only an
    empty one). ``InvalidInputError`` when they were asked from another model, version or set
    of outputs than ``header``."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    try:
        stored = AnswersHeader.model_validate_json(lines[0])
    except ValidationError as exc:
        raise InvalidInputError(f"{path} is not an audit's answers file; use --restart "
                                "to discard it") from exc
    if stored != header:
        raise InvalidInputError(
            f"{path} holds answers of model {stored.model!r} version {stored.version} "
            f"({', '.join(stored.include)}), not of {header.model!r} version {header.version} "
            f"({', '.join(header.include)}); use --restart to discard them"
        )
    answers = {}
    for line in lines[1:]:
        try:
            answer = Answer.model_validate_json(line)
        except ValidationError:  # the last line of an interrupted write
            continue
        answers[answer.path] = answer
    return answers


class AnswersWriter:
    """Appends answers to the file (a fresh file starts with the header), flushed per call."""

    def __init__(self, path: Path, header: AnswersHeader, *, fresh: bool) -> None:
        self._handle = path.open("w" if fresh else "a", encoding="utf-8")
        if fresh:
            self._write(header.model_dump_json())

    def add(self, answers: list[Answer]) -> None:
        for answer in answers:
            self._write(answer.model_dump_json(exclude_none=True))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> AnswersWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _write(self, text: str) -> None:
        self._handle.write(text + "\n")
