"""The shipped demo model's checkpoint, recovered from its graph: ``runs/demo/<model>.pt``
for the benchmarks that need the model in PyTorch (the exact reference of ``make
bench-uncertainty``'s error section, ``make bench-share-withholding``).

``make models`` writes the checkpoints, but they are not in git, and ``make models`` on
another CPU trains other weights (its float kernels differ: ``docs/studies.md``), so a
checkpoint it writes there is not the model in ``model_repo/``. The shipped graph holds the
model itself: the demo backbone has no layer the export folds (no batch norm), so every tensor
of the model's ``state_dict`` is an initializer of the graph named ``model.<key>``, unchanged.
This script builds the demo's ``ModelSpec`` for the card's head, R and tau
(``hetexport.studies.demo``), checks it against the card, loads those initializers as the
weights and checks the model against the graph itself: the noise-free class distribution
``link(mu / tau)`` (``latent_probs``, ``hetexport.serving.head.latent_link``: no sampling
involved) on ``--images`` clean test
images, within the export's parity tolerance. Then it writes the checkpoint, with the card's
metrics. It refuses (exit 1, nothing written) where any of that fails.

Reproduce: ``.venv/bin/python bench/demo_checkpoint.py [--model fashion_het]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from hetcontract import MODEL_CARD_FILENAME, ModelCard
from hetexport.checkpoint import save_checkpoint
from hetexport.model import build_model
from hetexport.onnx.parity import PROB_TOLERANCE
from hetexport.onnx.runner import OnnxRunner
from hetexport.repo.layout import MODEL_FILENAME
from hetexport.serving.head import latent_link
from hetexport.studies.demo import DemoConfig, _spec
from hetexport.training.experiment import prepare_fashion_mnist
from onnx import numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHT_PREFIX = "model."
"""What the export prefixes to a ``state_dict`` key to name its initializer."""


class RecoveryError(RuntimeError):
    """The graph does not hold the model the demo's spec describes."""


def recover(model_dir: Path, *, images: int) -> tuple[torch.nn.Module, ModelCard, float]:
    """The model of an exported demo model directory, its card and the largest difference of
    its ``latent_probs`` from the graph's on the first ``images`` clean test images."""
    card = ModelCard.model_validate_json((model_dir / MODEL_CARD_FILENAME).read_text())
    graph = model_dir / card.version / MODEL_FILENAME
    config = DemoConfig(model_repo=model_dir.parent, progress=False)
    data = prepare_fashion_mnist(config.data_dir, noise_rate=config.noise_rate)
    spec = _spec(config, data, head=card.head, num_factors=card.num_factors,
                 temperature=card.temperature)
    if (list(spec.labels), spec.input) != (card.labels, card.input):
        raise RecoveryError(f"the demo's spec ({spec.labels}, {spec.input}) is not the card's")
    model = build_model(spec).eval()
    model.load_state_dict(graph_weights(graph, model.state_dict()), strict=True)
    test = data.test_images[:images]
    with torch.no_grad():
        out = model(test)
        ours = latent_link(out.latent.mean, out.temperature, link=model.head.link).numpy()
    theirs = OnnxRunner(graph).run(test.numpy())["latent_probs"]
    return model, card, float(np.abs(ours - theirs).max())


def graph_weights(graph: Path, wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``wanted``'s keys, each with the graph's initializer ``model.<key>`` (same shape)."""
    found = {t.name: t for t in onnx.load(str(graph)).graph.initializer}
    weights = {}
    for key, like in wanted.items():
        tensor = found.get(WEIGHT_PREFIX + key)
        if tensor is None:
            raise RecoveryError(f"{graph}: no initializer {WEIGHT_PREFIX + key} (a folded layer?)")
        value = torch.from_numpy(numpy_helper.to_array(tensor).copy())
        if value.shape != like.shape:
            raise RecoveryError(f"{graph}: {WEIGHT_PREFIX + key} is {tuple(value.shape)}, the "
                                f"model's {key} {tuple(like.shape)}")
        weights[key] = value.to(like.dtype)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repo")
    parser.add_argument("--model", default="fashion_het")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "demo")
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        model, card, difference = recover(args.model_repository / args.model, images=args.images)
    except RecoveryError as error:
        print(f"cannot recover {args.model}: {error}", file=sys.stderr)
        return 1
    if difference > PROB_TOLERANCE:
        print(f"cannot recover {args.model}: latent_probs differ from the graph's by "
              f"{difference:.2g} > {PROB_TOLERANCE:g}", file=sys.stderr)
        return 1
    path = save_checkpoint(args.output_dir / f"{args.model}.pt", model, metrics=card.metrics)
    print(f"wrote {path}: the graph's weights; latent_probs within {difference:.2g} of the "
          f"graph's on {args.images} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
