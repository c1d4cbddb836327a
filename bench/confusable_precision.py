"""Per-input confusable precision through the gateway: does the first class the shipped model
says a top-1's probability moves to lie in the input's noisy group?

Starts ``hetgateway serve`` on ``model_repo/`` (loopback, free ports), sends the first
``--images`` Fashion-MNIST test images as PNGs (JSON, ``--batch`` per request) to
``fashion_het`` and, for comparison in the same run, to ``fashion_det``, and counts with
``hetexport.studies.confusable_precision``: among images whose true class and top-1 lie in the same
noisy group ({T-shirt/top, Pullover, Coat, Shirt} or {Sandal, Sneaker, Ankle boot}), the
fraction whose first ``confusable[0].confused_with`` class lies in that group (an empty list,
i.e. no claim, counts as a miss), with a Wilson 95 % interval. The baseline is the runner-up
class of the answer's own probabilities (``predictions[1]``), which needs no noise model.
Target (issue "Confusable classes a user can trust"): >= 0.99 for ``fashion_het``.

Since the head withholds a top class's shares whose own standard error is too large (the answer
says ``"withheld": true`` and names no class), the same precision is also reported over the
images whose answer names a class (``first_confusable_when_named``), with how many answers
withheld the top-1's shares (``withheld``).

Reproduce: ``.venv/bin/python bench/confusable_precision.py`` (``make bench-confusable``);
results in ``bench/results/confusable-precision.json`` with their provenance.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from hetexport.data import FASHION_MNIST_LABELS, load_fashion_mnist
from hetexport.label_noise import FASHION_MNIST_NOISY_GROUPS
from hetexport.studies.confusable_precision import NO_CLASS, group_confusable_precision
from loopback_target import FASHION_MNIST_DIR, png, served_stack
from provenance import RESULTS_DIR, provenance

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = ("fashion_het", "fashion_det")
TARGET = 0.99
"""The first confusable class's precision ``fashion_het`` should reach (module doc)."""
MEASURED = ["model_repo/fashion_het", "model_repo/fashion_det",
            "export/src/hetexport/class_correlation.py", "server/src/hetgateway/answer.py",
            "export/src/hetexport/studies/confusable_precision.py", "bench/confusable_precision.py"]


def main() -> int:
    args = parse_args()
    test = load_fashion_mnist(FASHION_MNIST_DIR, split="test")
    labels = test.labels[: args.images].numpy()
    pngs = [png(image[0].numpy()) for image in test.images[: args.images]]
    report = {"provenance": provenance(MEASURED), "images": args.images, "target": TARGET,
              "models": {}}
    with tempfile.TemporaryDirectory(prefix="hetserve-precision-") as tmp, served_stack(
        REPO_ROOT / "model_repo", log_path=Path(tmp) / "serve.log"
    ) as stack:
        for model in MODELS:
            top1, first, runner_up, withheld = answers(stack.url, model, pngs,
                                                       batch=args.batch)
            named = first != NO_CLASS
            report["models"][model] = {
                "first_confusable": _precision(labels, top1, first),
                "first_confusable_when_named": _precision(labels[named], top1[named],
                                                          first[named]),
                "runner_up": _precision(labels, top1, runner_up),
                "no_claim": int((~named).sum()),
                "withheld": int(withheld.sum()),
            }
    output = RESULTS_DIR / "confusable-precision.json"
    output.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    for model, row in report["models"].items():
        hit, base = row["first_confusable"], row["runner_up"]
        when = row["first_confusable_when_named"]
        when_text = "none named" if when is None else f"{when['value']:.4f} of {when['total']}"
        print(f"{model}: first confusable {hit['value']:.4f} [{hit['low']:.4f}, {hit['high']:.4f}]"
              f" of {hit['total']}; runner-up {base['value']:.4f}; no claim for "
              f"{row['no_claim']} images ({row['withheld']} withheld); when a class is named: "
              f"{when_text}")
    print(f"wrote {output.relative_to(REPO_ROOT)}")
    return 0


def answers(url: str, model: str, pngs: list[bytes], *, batch: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-1, first confusable class of the top-1 (NO_CLASS if none), runner-up and whether
    the top-1's shares were withheld, per image."""
    top1, first, runner_up, withheld = [], [], [], []
    for start in range(0, len(pngs), batch):
        body = json.dumps({"inputs": [{"image": base64.b64encode(p).decode()}
                                      for p in pngs[start:start + batch]], "top_k": 2}).encode()
        request = urllib.request.Request(f"{url}/v1/models/{model}/predict", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            results = json.loads(answer.read())["results"]
        for result in results:
            predictions = result["predictions"]
            top_class = result["uncertainty"]["confusable"][0]
            moves_to = top_class["confused_with"]
            withheld.append(bool(top_class.get("withheld", False)))
            top1.append(predictions[0]["class_id"])
            runner_up.append(predictions[1]["class_id"])
            first.append(moves_to[0]["class_id"] if moves_to else NO_CLASS)
    return np.array(top1), np.array(first), np.array(runner_up), np.array(withheld)


def _precision(labels: np.ndarray, top1: np.ndarray, named: np.ndarray) -> dict | None:
    """The precision with its interval; None over no images (a head that never names a
    class has no precision "when it names one")."""
    if len(labels) == 0:
        return None
    result = group_confusable_precision(labels, top1, named, FASHION_MNIST_NOISY_GROUPS,
                                        num_classes=len(FASHION_MNIST_LABELS))
    return result._asdict()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
