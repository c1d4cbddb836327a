"""The fitted ("optimized") noise bank against the Sobol designs and plain Monte Carlo S = 1000.

For the demo model (``runs/demo/fashion_het.pt``) this plans each bank exactly as
``hetexport export --bank-design D --mc-samples S --error-images <Fashion-MNIST>`` does
(``plan_sampling`` on the first ``--export-images`` clean test images: seed searched, and for
"optimized" the bank fitted, on the first half), then measures every served quantity's error
against the exact integral (``hetexport.exact``, 2^18 randomized QMC points) on three image
sets:

* ``fit``: the first half of the export images (what the seed search and the fit saw);
* ``card``: their second half (what the export's model card reports);
* ``held_out``: test images ``--held-out-offset`` onwards (default 9000-9399, the
  ``bench/uncertainty_cost.py`` error images, which no choice ever saw).

Each row: mean and 99th percentile over images of the p_bar max-abs error, the top-k
probabilities', the predictive and expected entropies' and the mutual information's (nats),
the confusable shares' (reported, not fitted); and the score, the largest ratio of a mean or
p99 error to plain Monte Carlo S = 1000's on the same images (<= 1: at least as exact on
every integral quantity). Also the fit's wall time (one thread).

Reproduce: ``.venv/bin/python bench/bank_fit.py`` (``make bench-bank-fit``); results in
``bench/results/bank-fit-<export images>img-<machine>.json`` with their provenance
(``--export-images 1000``: the fit sees 500 images, the card 500).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hetexport.checkpoint import load_checkpoint
from hetexport.data import held_out_images
from hetexport.exact.bank_search import score
from hetexport.exact.measure import Reference, head_error, reference_for
from hetexport.layers import NoiseBank
from hetexport.model import HetClassifier
from hetexport.onnx.sampling_plan import plan_sampling
from provenance import write_result

REPO_ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = ("probs", "topk_probs", "predictive_entropy", "expected_entropy",
              "mutual_information", "confusable_share")
PLANNED = (("moment_matched_sobol", 64), ("moment_matched_sobol", 128), ("optimized", 64),
           ("optimized", 128))
FIXED = (("normal", 1000), ("normal", 128), ("sobol", 128))
"""Banks drawn from seed 0 (the baseline first)."""
MEASURES = ["export/src/hetexport/exact", "export/src/hetexport/layers/noise_bank.py",
            "export/src/hetexport/onnx/sampling_plan.py", "bench/bank_fit.py"]


def main() -> None:
    args = _arguments()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint).model.eval()
    head = model.head
    count = args.held_out_offset + args.held_out
    images = held_out_images(args.data_dir, model.spec.input, limit=max(count, args.export_images))
    export_images = images[:args.export_images]
    half = args.export_images // 2
    sets = {"fit": export_images[:half], "card": export_images[half:],
            "held_out": images[args.held_out_offset:count]}
    started = time.perf_counter()
    references = {name: reference_for(model, batch) for name, batch in sets.items()}
    print(f"references: {time.perf_counter() - started:.0f} s; largest standard error "
          f"{max(_largest_se(r) for r in references.values()):.1e}", flush=True)
    banks: dict[str, NoiseBank] = {}
    fit_seconds: dict[str, float] = {}
    for design, samples in FIXED:
        banks[f"{design} S={samples}"] = NoiseBank.fixed(samples, head.num_factors,
                                                         head.diag_noise_dim, seed=0,
                                                         design=design)
    for design, samples in PLANNED:
        started = time.perf_counter()
        plan = plan_sampling(model, mc_samples=samples, mc_error=None, design=design, seed=0,
                             images=export_images)
        fit_seconds[f"{design} S={samples}"] = time.perf_counter() - started
        banks[f"{design} S={samples}"] = plan.bank or NoiseBank.fixed(
            samples, head.num_factors, head.diag_noise_dim, seed=plan.seed, design=design)
        print(f"planned {design} S={samples} (seed {plan.seed}): "
              f"{fit_seconds[f'{design} S={samples}']:.0f} s", flush=True)
    table = {name: _errors(model, sets, references, bank) for name, bank in banks.items()}
    baseline = table[f"{FIXED[0][0]} S={FIXED[0][1]}"]
    for rows in table.values():
        for set_name, summary in rows.items():
            summary["score"] = score(summary, baseline[set_name])
    _print(table)
    write_result({"export_images": args.export_images, "held_out_first": args.held_out_offset,
                  "held_out_images": args.held_out, "reference": references["fit"].description,
                  "plan_seconds": fit_seconds, "errors": table},
                 f"bank-fit-{args.export_images}img", measures=MEASURES)


def _errors(model: HetClassifier, sets: dict[str, torch.Tensor],
            references: dict[str, Reference], bank: NoiseBank) -> dict[str, dict]:
    return {name: _summary(head_error(model, batch, references[name], bank=bank).summary())
            for name, batch in sets.items()}


def _summary(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {q: summary[q] for q in QUANTITIES}


def _largest_se(reference: Reference) -> float:
    return max(float(v.max()) for v in reference.exact.standard_error.values())


def _print(table: dict[str, dict[str, dict]]) -> None:
    short = {"probs": "p_bar", "topk_probs": "topk", "predictive_entropy": "H",
             "expected_entropy": "E[H]", "mutual_information": "MI", "confusable_share": "share"}
    for set_name in next(iter(table.values())):
        print(f"\n{set_name}: mean / p99 error ({', '.join(short.values())}); score vs "
              "normal S=1000")
        for name, rows in table.items():
            row = rows[set_name]
            cells = " ".join(f"{short[q]} {row[q]['mean']:.1e}/{row[q]['p99']:.1e}"
                             for q in QUANTITIES)
            print(f"  {name:28s} {cells} score {row['score']:.2f}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "runs/demo/fashion_het.pt")
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--export-images", type=int, default=400,
                        help="first N clean test images, as --error-images gives the export")
    parser.add_argument("--held-out-offset", type=int, default=9000)
    parser.add_argument("--held-out", type=int, default=400)
    return parser.parse_args()


if __name__ == "__main__":
    main()
