"""The labelled images an audit reads: a manifest CSV of ``path,label`` or a folder per class.

Typical usage::

    images = read_labelled_images("manifest.csv")      # or a folder DIR/<label>/<image>
    ids = resolve_labels(images, model.labels)          # class names or ids -> class ids

A manifest has one ``path,label`` row per image (a header row ``path,label`` is optional;
relative paths are taken from the manifest's folder); a label is a class name of the model or
a class id. A folder holds one sub-folder per class (named by class name or id) with the
images inside; other files are skipped. Both come back in a stable order.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from hetclient.errors import InvalidInputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"})
"""The files of a class folder that are audited."""
MANIFEST_HEADER = ("path", "label")


class LabelledImage(NamedTuple):
    """One image file and its given label, as written (a class name or id, resolved later)."""

    path: str
    label: str


def read_labelled_images(source: str | os.PathLike[str]) -> list[LabelledImage]:
    """A manifest CSV or a class-per-folder directory as (path, label) pairs, in a stable
    order (``InvalidInputError`` when it holds none or cannot be read)."""
    path = Path(source)
    images = _read_folder(path) if path.is_dir() else _read_manifest(path)
    if not images:
        raise InvalidInputError(f"{path} holds no labelled images")
    return images


def resolve_labels(images: Sequence[LabelledImage], labels: Sequence[str]) -> list[int]:
    """Each image's label as a class id: an exact class name, else an integer id in range
    (``InvalidInputError`` naming the first image whose label is neither)."""
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
