"""What a `make models` rebuild changes: a rebuilt model repository against the shipped one.

For each model directory of ``--shipped`` (``model_repo/``: ``fashion_het``, ``fashion_det``)
and its namesake in ``--rebuilt`` (the ``model_repo/`` of a clone where ``make models`` ran),
every file is compared byte for byte (SHA-256); the model card is compared field by field with
its ``calibration.date`` left out (the date the card was written: the one field two rebuilds
may not share). Where the graphs differ, both are run with ONNX Runtime (one thread) on the
first ``--images`` clean Fashion-MNIST test images, preprocessed as the gateway does
(``(pixel / scale - mean) / std`` from the card), and the answers compared:

* ``probs``: the largest and the 99th-percentile ``|p_rebuilt - p_shipped|`` over images and
  classes;
* top-1: the share of images whose top class agrees, and each repository's top-1 accuracy
  against the clean test labels;
* the entropies (predictive, expected, mutual information): the largest difference.

The demo reports' HET - plain table (``reports/demo_report.json``: clean-test top-1 and NLL of
each head) is compared too when both sides have one (``--shipped-reports``,
``--rebuilt-reports``).

Reproduce (the second clone's ``make models`` writes the rebuilt side)::

    git clone . /tmp/rebuild && make -C /tmp/rebuild models
    .venv/bin/python bench/models_rebuild.py --rebuilt /tmp/rebuild/model_repo \\
        --rebuilt-reports /tmp/rebuild/reports

Result: ``bench/results/models-rebuild-<machine>.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from hetexport.data import DEFAULT_FASHION_MNIST_DIR
from hetexport.data.fashion_mnist import load_fashion_mnist
from provenance import REPO_ROOT, write_result

MODELS = ("fashion_het", "fashion_det")
GRAPH = Path("1") / "model.onnx"
CARD = "model_card.json"
CARD_DATE = ("calibration", "date")
"""The card's one field two rebuilds may not share: the day its calibration was written."""
ENTROPIES = ("predictive_entropy", "expected_entropy", "mutual_information")
DEFAULT_IMAGES = 2000
BATCH = 500


def file_digests(model_dir: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``model_dir``."""
    return {str(path.relative_to(model_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(model_dir.rglob("*")) if path.is_file()}


def card_without_date(model_dir: Path) -> dict[str, Any]:
    """The model card with ``calibration.date`` removed (None where it has no calibration)."""
    card = json.loads((model_dir / CARD).read_text())
    section, field = CARD_DATE
    if isinstance(card.get(section), dict):
        card[section].pop(field, None)
    return card


def model_inputs(card: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """uint8 [N, C, H, W] images as the gateway feeds them: ``(pixel / scale - mean) / std``."""
    spec = card["input"]
    mean = np.asarray(spec["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], np.float32).reshape(-1, 1, 1)
    return ((images.astype(np.float32) / np.float32(spec["scale"]) - mean) / std).astype(
        np.float32)


def answers(graph: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """``probs`` and the entropies of ``graph`` on ``inputs``, in batches of ``BATCH``."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(graph), options,
                                           providers=["CPUExecutionProvider"])
    wanted = [name for name in ("probs", *ENTROPIES)
              if name in {output.name for output in session.get_outputs()}]
    name = session.get_inputs()[0].name
    parts = [dict(zip(wanted, session.run(wanted, {name: inputs[start:start + BATCH]}),
                      strict=True)) for start in range(0, len(inputs), BATCH)]
    return {key: np.concatenate([part[key] for part in parts]) for key in wanted}


def answer_differences(shipped: dict[str, np.ndarray], rebuilt: dict[str, np.ndarray],
                       labels: np.ndarray) -> dict[str, Any]:
    """How far the rebuilt graph's answers are from the shipped one's (module doc)."""
    gap = np.abs(rebuilt["probs"].astype(np.float64) - shipped["probs"])
    top_shipped, top_rebuilt = shipped["probs"].argmax(1), rebuilt["probs"].argmax(1)
    result = {
        "images": len(labels),
        "probs_max_abs_difference": float(gap.max()),
        "probs_p99_abs_difference": float(np.quantile(gap, 0.99)),
        "top1_agreement": float((top_shipped == top_rebuilt).mean()),
        "shipped_top1_accuracy": float((top_shipped == labels).mean()),
        "rebuilt_top1_accuracy": float((top_rebuilt == labels).mean()),
    }
    for name in ENTROPIES:
        if name in shipped and name in rebuilt:
            result[f"{name}_max_abs_difference"] = float(
                np.abs(rebuilt[name].astype(np.float64) - shipped[name]).max())
    return result


def compare_model(name: str, shipped_repo: Path, rebuilt_repo: Path, images: np.ndarray,
                  labels: np.ndarray) -> dict[str, Any]:
    """One model: its files byte for byte, its card without the date, its answers."""
    shipped_dir, rebuilt_dir = shipped_repo / name, rebuilt_repo / name
    shipped_files, rebuilt_files = file_digests(shipped_dir), file_digests(rebuilt_dir)
    differing = sorted(path for path in shipped_files.keys() | rebuilt_files.keys()
                       if shipped_files.get(path) != rebuilt_files.get(path))
    row: dict[str, Any] = {
        "model": name,
        "files": sorted(shipped_files.keys() | rebuilt_files.keys()),
        "files_differing": differing,
        "identical": not differing,
        "card_identical_but_date": card_without_date(shipped_dir) == card_without_date(
            rebuilt_dir),
        "graph_identical": shipped_files.get(str(GRAPH)) == rebuilt_files.get(str(GRAPH)),
    }
    if not row["graph_identical"]:
        card = json.loads((shipped_dir / CARD).read_text())
        inputs = model_inputs(card, images)
        row["answers"] = answer_differences(answers(shipped_dir / GRAPH, inputs),
                                            answers(rebuilt_dir / GRAPH, inputs), labels)
    return row


def demo_table(reports: Path | None) -> dict[str, Any] | None:
    """The demo report's clean-test figures per head, and HET - plain (None: no report)."""
    path = None if reports is None else reports / "demo_report.json"
    if path is None or not path.is_file():
        return None
    report = json.loads(path.read_text())
    means = {head: {metric: figures["mean"] for metric, figures in metrics.items()}
             for head, metrics in report["summary"].items()}
    return {"path": str(path), "epochs_kept": {f"{run['head']}_seed{run['seed']}":
                                                run["best_epoch"] for run in report["runs"]},
            "test_means": means, "het_minus_det": report["het_minus_det"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shipped", type=Path, default=REPO_ROOT / "model_repo")
    parser.add_argument("--rebuilt", type=Path, required=True,
                        help="the model_repo/ a `make models` rebuild wrote")
    parser.add_argument("--shipped-reports", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--rebuilt-reports", type=Path, default=None)
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_FASHION_MNIST_DIR)
    parser.add_argument("--label", default="rebuild",
                        help="what the rebuilt side is (written into the result)")
    args = parser.parse_args()
    test = load_fashion_mnist(args.data_dir, split="test")
    images = test.images[: args.images].numpy()
    labels = test.labels[: args.images].numpy()
    rows = [compare_model(name, args.shipped, args.rebuilt, images, labels) for name in MODELS]
    for row in rows:
        answers_part = row.get("answers")
        summary = "identical files" if row["identical"] else (
            f"differing files {row['files_differing']}; card equal but its date: "
            f"{row['card_identical_but_date']}")
        if answers_part:
            summary += (f"; |dp| max {answers_part['probs_max_abs_difference']:.4f}, top-1 "
                        f"agrees on {100 * answers_part['top1_agreement']:.1f} %, top-1 "
                        f"{answers_part['shipped_top1_accuracy']:.4f} -> "
                        f"{answers_part['rebuilt_top1_accuracy']:.4f}")
        print(f"{row['model']}: {summary}")
    report = {
        "label": args.label,
        "shipped": str(args.shipped), "rebuilt": str(args.rebuilt),
        "models": rows,
        "all_identical": all(row["identical"] for row in rows),
        "demo_report": {"shipped": demo_table(args.shipped_reports),
                        "rebuilt": demo_table(args.rebuilt_reports)},
    }
    write_result(report, f"models-{args.label}", measures=["model_repo", "reports"])


if __name__ == "__main__":
    main()
