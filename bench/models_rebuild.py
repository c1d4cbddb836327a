"""What a `make models` rebuild changes: another model repository against the shipped one.

The other side is either ``--rebuilt DIR`` (the ``model_repo/`` of a clone where ``make models``
ran: does a rebuild reproduce the shipped models?) or ``--previous REV`` (the shipped
``model_repo/`` and ``reports/`` at an earlier commit, read with ``git archive``: how far did a
rebuild move them?). For each model directory of the shipped ``model_repo/`` (``fashion_het``,
``fashion_det``) and its namesake on the other side, every file is compared byte for byte
(SHA-256); the model card is compared field by field with its ``calibration.date`` left out
(the date the card was written: the one field two rebuilds may not share). Where the graphs
differ, both are run with ONNX Runtime (one thread) on the
first ``--images`` clean Fashion-MNIST test images, preprocessed as the gateway does
(``loopback_target.preprocess``: the gateway's own normalisation, from the card), and the
answers compared:

* ``probs``: the largest and the 99th-percentile ``|p_other - p_shipped|`` over images and
  classes;
* top-1: the share of images whose top class agrees, and each repository's top-1 accuracy
  against the clean test labels;
* the entropies (predictive, expected, mutual information): the largest difference.

The demo reports' figures (``reports/demo_report.json``: each head's mean clean-test top-1,
NLL and ECE, HET - plain, the epoch each run kept) are set side by side when both sides have
one (the ``reports/`` beside each ``model_repo/``).

A rebuild writes the shipped bytes only with the shipped calibration's date:
``--shipped-epoch`` prints it as seconds since the epoch, for ``SOURCE_DATE_EPOCH`` (the one
input a rebuild takes from the clock). Reproduce::

    make bench-rebuild     # a fresh clone of HEAD, its make models, then --rebuilt
    .venv/bin/python bench/models_rebuild.py --previous 040aba6  # the models shipped before

Results: ``bench/results/models-rebuild-<machine>.json`` and
``bench/results/models-previous-<machine>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hetcontract import MODEL_CARD_FILENAME, ModelCard
from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.data.fashion_mnist import load_fashion_mnist
from hetexport.onnx.runner import OnnxRunner
from hetexport.repo.layout import FIRST_VERSION, MODEL_FILENAME
from loopback_target import preprocess
from provenance import REPO_ROOT, write_result

MODELS = ("fashion_het", "fashion_det")
GRAPH = Path(str(FIRST_VERSION)) / MODEL_FILENAME
CARD_DATE = ("calibration", "date")
"""The card's one field two rebuilds may not share: the day its calibration was written."""
ENTROPIES = ("predictive_entropy", "expected_entropy", "mutual_information")
DEFAULT_IMAGES = 2000
BATCH = 500


def file_digests(model_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``model_dir``."""
    return {str(path.relative_to(model_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(model_dir.rglob("*")) if path.is_file()}


def without_date(card: dict[str, Any]) -> dict[str, Any]:
    """A model card's JSON with ``calibration.date`` left out (as it is where it has no
    calibration)."""
    section, field = CARD_DATE
    if not isinstance(card.get(section), dict):
        return card
    return {**card, section: {k: v for k, v in card[section].items() if k != field}}


def answers(graph: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """``probs`` and the entropies of ``graph`` on ``inputs`` (ONNX Runtime, one thread), in
    batches of ``BATCH``."""
    runner = OnnxRunner(graph)
    wanted = [name for name in ("probs", *ENTROPIES) if name in runner.output_names]
    parts = [runner.run(inputs[start:start + BATCH]) for start in range(0, len(inputs), BATCH)]
    return {key: np.concatenate([part[key] for part in parts]) for key in wanted}


def answer_differences(shipped: dict[str, np.ndarray], other: dict[str, np.ndarray],
                       labels: np.ndarray) -> dict[str, Any]:
    """How far the other graph's answers are from the shipped one's (module doc)."""
    gap = np.abs(other["probs"].astype(np.float64) - shipped["probs"])
    top_shipped, top_other = shipped["probs"].argmax(1), other["probs"].argmax(1)
    result = {
        "images": len(labels),
        "probs_max_abs_difference": float(gap.max()),
        "probs_p99_abs_difference": float(np.quantile(gap, 0.99)),
        "top1_agreement": float((top_shipped == top_other).mean()),
        "shipped_top1_accuracy": float((top_shipped == labels).mean()),
        "other_top1_accuracy": float((top_other == labels).mean()),
    }
    for name in ENTROPIES:
        if name in shipped and name in other:
            result[f"{name}_max_abs_difference"] = float(
                np.abs(other[name].astype(np.float64) - shipped[name]).max())
    return result


def compare_model(name: str, shipped_repo: Path, other_repo: Path, images: np.ndarray,
                  labels: np.ndarray) -> dict[str, Any]:
    """One model: its files byte for byte, its card without the date, its answers on
    ``images`` (uint8 [N, H, W]) against ``labels``."""
    shipped_dir, other_dir = shipped_repo / name, other_repo / name
    shipped_files, other_files = file_digests(shipped_dir), file_digests(other_dir)
    shipped_card, other_card = (json.loads((directory / MODEL_CARD_FILENAME).read_text())
                                for directory in (shipped_dir, other_dir))
    differing = sorted(path for path in shipped_files.keys() | other_files.keys()
                       if shipped_files.get(path) != other_files.get(path))
    row: dict[str, Any] = {
        "model": name,
        "files": sorted(shipped_files.keys() | other_files.keys()),
        "files_differing": differing,
        "identical": not differing,
        "card_identical_but_date": without_date(shipped_card) == without_date(other_card),
        "graph_identical": shipped_files.get(str(GRAPH)) == other_files.get(str(GRAPH)),
    }
    if not row["graph_identical"]:
        inputs = preprocess(images, ModelCard.model_validate(shipped_card))
        row["answers"] = answer_differences(answers(shipped_dir / GRAPH, inputs),
                                            answers(other_dir / GRAPH, inputs), labels)
    return row


def shipped_epoch(repository: Path) -> int:
    """The calibration date of ``repository``'s ``fashion_het`` card, in seconds since the
    epoch."""
    card = json.loads((repository / MODELS[0] / MODEL_CARD_FILENAME).read_text())
    section, field = CARD_DATE
    return int(dt.datetime.fromisoformat(card[section][field]).timestamp())


def repository_at(revision: str, directory: Path) -> Path:
    """``model_repo/`` and ``reports/`` as committed at ``revision``, extracted under
    ``directory``; returns the extracted ``model_repo/``."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", revision, "model_repo",
                              "reports"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory / "model_repo"


def demo_table(reports: Path) -> dict[str, Any] | None:
    """The demo report's clean-test figures per head, and HET - plain (None: no report)."""
    path = reports / "demo_report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    means = {head: {metric: figures["mean"] for metric, figures in metrics.items()}
             for head, metrics in report["summary"].items()}
    return {"epochs_kept": {f"{run['head']}_seed{run['seed']}": run["best_epoch"]
                            for run in report["runs"]},
            "test_means": means, "het_minus_det": report["het_minus_det"]}


def row_summary(row: dict[str, Any]) -> str:
    """One model's comparison in a line."""
    if row["identical"]:
        return "identical files"
    line = (f"differing files {row['files_differing']}; card equal but its date: "
            f"{row['card_identical_but_date']}")
    found = row.get("answers")
    if found:
        line += (f"; |dp| max {found['probs_max_abs_difference']:.4f}, top-1 agrees on "
                 f"{100 * found['top1_agreement']:.1f} %, top-1 accuracy "
                 f"{found['shipped_top1_accuracy']:.4f} (shipped) vs "
                 f"{found['other_top1_accuracy']:.4f}")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    other = parser.add_mutually_exclusive_group(required=True)
    other.add_argument("--shipped-epoch", action="store_true",
                       help="print the shipped fashion_het calibration's date as seconds since "
                       "the epoch (SOURCE_DATE_EPOCH for a rebuild) and exit")
    other.add_argument("--rebuilt", type=Path,
                       help="the model_repo/ a `make models` rebuild wrote (its reports/ beside)")
    other.add_argument("--previous", metavar="REV",
                       help="the model_repo/ and reports/ committed at this git revision")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_FASHION_MNIST_DIR)
    args = parser.parse_args()
    if args.shipped_epoch:
        print(shipped_epoch(REPO_ROOT / "model_repo"))
        return
    with tempfile.TemporaryDirectory(prefix="hetserve-models-") as tmp:
        if args.previous is not None:
            other_repo, label = repository_at(args.previous, Path(tmp)), "previous"
        else:
            other_repo, label = args.rebuilt.resolve(), "rebuild"
        report = compare(REPO_ROOT / "model_repo", other_repo, args)
    report = {"compared_with": label,
              "other": args.previous if args.previous is not None else str(args.rebuilt),
              **report}
    write_result(report, f"models-{label}", measures=["model_repo", "reports"])


def compare(shipped: Path, other: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The shipped repository against ``other``, model by model, and their demo reports."""
    test = load_fashion_mnist(args.data_dir, split="test")
    images = test.images[: args.images, 0].numpy()  # uint8 [N, H, W]
    labels = test.labels[: args.images].numpy()
    rows = [compare_model(name, shipped, other, images, labels) for name in MODELS]
    for row in rows:
        print(f"{row['model']}: {row_summary(row)}")
    return {
        "models": rows,
        "all_identical": all(row["identical"] for row in rows),
        "demo_report": {"shipped": demo_table(shipped.parent / "reports"),
                        "other": demo_table(other.parent / "reports")},
    }


if __name__ == "__main__":
    main()
