"""A Triton model repository on disk: model directories, versions, atomic writes.

A builder (``hetexport.onnx.export``, ``hetexport.fused.ensemble``) returns a model as
``ModelFiles`` in memory; ``write_model`` alone puts it on disk::

    model_repo/<name>/config.pbtxt       the config (with the model card as a parameter)
    model_repo/<name>/model_card.json    hetcontract.ModelCard, its ``version`` the written one
    model_repo/<name>/labels.txt         one label per line, class id order
    model_repo/<name>/<N>/...            the version's files (model.onnx, model.py, ...)

Typical usage::

    written = write_model(Path("model_repo"), files)                # replaces it: version 1
    written = write_model(Path("model_repo"), files, version=next_version(repo, name))
    written.version_dir / MODEL_FILENAME

Every write builds the whole model directory in a temporary sibling and swaps it in at once,
so a server watching the repository never sees half a model or half a version; a failed
write leaves the directory as it was. Triton serves the newest version (its default version
policy, latest 1); the older directories stay for a roll-back (delete the newest one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hetcontract import MODEL_CARD_FILENAME, MODEL_CARD_PARAMETER, ModelCard

from hetexport.errors import RepositoryError
from hetexport.repo.config import ModelConfig
from hetexport.repo.pbtxt import ConfigParseError, parse_config, render_config

CONFIG_FILENAME = "config.pbtxt"
LABELS_FILENAME = "labels.txt"
MODEL_FILENAME = "model.onnx"
FIRST_VERSION = 1


@dataclass(frozen=True)
class ModelFiles:
    """One model in memory, as a builder returns it.

    ``config`` becomes ``config.pbtxt``; ``card``, when given, ``model_card.json`` and the
    config's model card parameter (both with the written version); ``labels`` ``labels.txt``
    (none: no file); ``version_files`` the files of the version directory, by relative path.
    """

    config: ModelConfig
    version_files: Mapping[str, bytes]
    card: ModelCard | None = None
    labels: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class WrittenModel:
    """Where ``write_model`` put a model: its directory, the version written, every version
    the directory now holds, and the card as written (None without one)."""

    model_dir: Path
    version: int
    versions: tuple[int, ...]
    card: ModelCard | None

    @property
    def version_dir(self) -> Path:
        return self.model_dir / str(self.version)

    @property
    def config_path(self) -> Path:
        return self.model_dir / CONFIG_FILENAME

    @property
    def card_path(self) -> Path:
        return self.model_dir / MODEL_CARD_FILENAME

    @property
    def labels_path(self) -> Path:
        return self.model_dir / LABELS_FILENAME


def existing_versions(model_dir: Path) -> list[int]:
    """The numeric version directories of a model directory, ascending (none: empty)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_repo: str | os.PathLike[str], name: str) -> int:
    """The newest existing version of ``name`` + 1, or 1."""
    existing = existing_versions(Path(model_repo) / name)
    return existing[-1] + 1 if existing else FIRST_VERSION


def write_model(
    model_repo: str | os.PathLike[str], files: ModelFiles, *, version: int | None = None
) -> WrittenModel:
    """Write ``files`` as ``model_repo/<name>/`` (see the module doc).

    ``version`` None replaces the model directory by version 1 alone; a number adds that
    version beside the existing ones (whose config, card and labels the new ones replace).
    Raises RepositoryError, changing nothing, when the version exists already, the name is
    not a directory name, or the disk refuses.
    """
    model_repo = Path(model_repo)
    model_dir = model_repo / files.name
    kept = [] if version is None else existing_versions(model_dir)
    number = FIRST_VERSION if version is None else version
    if number < FIRST_VERSION or number in kept:
        raise RepositoryError(
            f"version {number} of {files.name!r} exists already (versions: {kept}); "
            "choose another version"
        )
    card = files.card
    config = files.config
    contents: dict[str, bytes] = {}
    if card is not None:
        card = card.model_copy(update={"version": str(number)})
        contents[MODEL_CARD_FILENAME] = (card.model_dump_json(indent=2) + "\n").encode()
        config = config.with_parameter(MODEL_CARD_PARAMETER, card.model_dump_json())
    contents[CONFIG_FILENAME] = render_config(config).encode()
    if files.labels:
        contents[LABELS_FILENAME] = ("\n".join(files.labels) + "\n").encode()
    for old in kept:
        contents.update(read_files(model_dir, under=str(old)))
    contents.update({f"{number}/{path}": data for path, data in files.version_files.items()})
    write_model_dir(model_repo, files.name, contents)
    return WrittenModel(model_dir, number, tuple(sorted([*kept, number])), card)


def replace_card(model_dir: Path, card: ModelCard) -> Path:
    """Rewrite an existing model's card (``model_card.json`` and the config's model card
    parameter) as ``card``, every other file as it was; the directory is swapped in at once
    like any write. Raises RepositoryError, changing nothing, when the config cannot be read
    or the disk refuses."""
    model_dir = Path(model_dir)
    files = read_files(model_dir)
    try:
        config = parse_config(files[CONFIG_FILENAME].decode("utf-8"))
    except (KeyError, UnicodeDecodeError, ConfigParseError) as exc:
        raise RepositoryError(f"cannot read {model_dir / CONFIG_FILENAME}: {exc}") from exc
    config = config.with_parameter(MODEL_CARD_PARAMETER, card.model_dump_json())
    files[CONFIG_FILENAME] = render_config(config).encode()
    files[MODEL_CARD_FILENAME] = (card.model_dump_json(indent=2) + "\n").encode()
    return write_model_dir(model_dir.parent, model_dir.name, files)


def read_files(model_dir: Path, *, under: str = "") -> dict[str, bytes]:
    """Every file below ``model_dir / under``, by path relative to ``model_dir``."""
    root = model_dir / under
    return {str(path.relative_to(model_dir)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def write_model_dir(model_repo: Path, name: str, files: Mapping[str, bytes]) -> Path:
    """Write every file into a temporary sibling, then swap it in for ``model_repo/<name>``."""
    if not name or "/" in name or name.startswith("."):
        raise RepositoryError(f"invalid model name {name!r}")
    target = model_repo / name
    try:
        model_repo.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=model_repo))
    except OSError as exc:
        raise RepositoryError(f"cannot write {target}: {exc}") from exc
    try:
        for relative, content in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        staging.chmod(0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=model_repo))
            target.replace(retired / name)
            staging.replace(target)
            shutil.rmtree(retired)
        else:
            staging.replace(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RepositoryError(f"cannot write {target}: {exc}") from exc
    return target
