"""Export-time validation: ONNX Runtime against PyTorch on the same images and noise bank.

Checks, at batch sizes 1, 7 and 64 (seeded random normalised images):

* max |ORT - torch| <= ``PROB_TOLERANCE`` (1e-5) on ``probs``/``topk_probs``, <=
  ``CORRELATION_TOLERANCE`` (1e-5) on the latent correlation, <= ``SHARE_TOLERANCE`` (1e-4) on
  the confusable shares (a ratio of two sample covariances) and <= ``ENTROPY_TOLERANCE``
  (1e-4) on the entropies and the mutual information;
* ids agree except on exact ties: every id ONNX Runtime returns must carry, in PyTorch, the
  value at that rank (so a different id is accepted only when its value ties); a top class
  that neither runtime moves (all its shares 0) has confusable ids in a fixed order, which
  must be PyTorch's (``confusable_ids_agree``);
* a top class's shares are withheld in both or in neither, except where PyTorch's standard
  errors lie within ``WITHHOLD_MARGIN`` (relative) of their limits, where float32 rounding may
  decide (``hetexport.class_correlation.ShareEstimate.margin``); such rows are counted
  (``withheld_flips``) and left out of the share difference;
* determinism: the first rows of the 64-batch equal the 1- and 7-batches bit for bit, the
  64-batch in reverse order gives every image (now at another position) the same bits, and a
  second session repeats the first bit for bit.

Typical usage::

    report = check_parity(graph, onnx_bytes, input_shape=(1, 28, 28))
    card_parity = report.as_card()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hetexport.class_correlation import WITHHELD_SHARE, probability_shares
from hetexport.errors import ExportError
from hetexport.onnx.runner import OnnxRunner
from hetexport.serving.head import ServingGraph

PROB_TOLERANCE = 1e-5
CORRELATION_TOLERANCE = 1e-5
SHARE_TOLERANCE = 1e-4
ENTROPY_TOLERANCE = 1e-4
WITHHOLD_MARGIN = 1e-4
PARITY_BATCH_SIZES = (1, 7, 64)
PARITY_SEED = 0

TOLERANCES: dict[str, float] = {
    "probs": PROB_TOLERANCE,
    "latent_probs": PROB_TOLERANCE,
    "topk_probs": PROB_TOLERANCE,
    "topk_correlation": CORRELATION_TOLERANCE,
    "confusable_share": SHARE_TOLERANCE,
    "predictive_entropy": ENTROPY_TOLERANCE,
    "expected_entropy": ENTROPY_TOLERANCE,
    "mutual_information": ENTROPY_TOLERANCE,
}


@dataclass(frozen=True)
class ParityReport:
    """What the validation measured; ``as_card()`` is what goes into the model card."""

    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float]
    ids_match_up_to_ties: bool
    id_ties: int
    bit_identical_across_batches: bool
    bit_identical_across_sessions: bool
    tolerances: dict[str, float] = field(default_factory=lambda: dict(TOLERANCES))
    withheld_flips: int = 0

    def as_card(self) -> dict[str, Any]:
        return {
            "reference": "pytorch",
            "runtime": "onnxruntime-cpu",
            "batch_sizes": list(self.batch_sizes),
            "max_abs_diff": {k: float(v) for k, v in self.max_abs_diff.items()},
            "tolerances": dict(self.tolerances),
            "ids_match_up_to_ties": self.ids_match_up_to_ties,
            "id_ties": self.id_ties,
            "withheld_flips": self.withheld_flips,
            "bit_identical_across_batches": self.bit_identical_across_batches,
            "bit_identical_across_sessions": self.bit_identical_across_sessions,
        }


def check_parity(
    graph: ServingGraph,
    onnx_model: bytes,
    *,
    input_shape: tuple[int, int, int],
    batch_sizes: tuple[int, ...] = PARITY_BATCH_SIZES,
    seed: int = PARITY_SEED,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch; raise ExportError with the figures if they disagree."""
    rng = np.random.default_rng(seed)
    largest = max(batch_sizes)
    images = rng.standard_normal((largest, *input_shape)).astype(np.float32)
    runner = OnnxRunner(onnx_model)
    diffs = dict.fromkeys(TOLERANCES, 0.0)
    ties = flips = 0
    flips_ok = True
    ids_ok = True
    by_batch: dict[int, dict[str, np.ndarray]] = {}
    for size in batch_sizes:
        got = runner.run(images[:size])
        by_batch[size] = got
        want = _torch_outputs(graph, images[:size])
        flipped, margin = _withheld_flips(graph, images[:size], got, want)
        flips += int(flipped.sum())
        flips_ok &= bool((margin[flipped] < WITHHOLD_MARGIN).all())
        for name in TOLERANCES:
            difference = np.abs(got[name].astype(np.float64) - want[name])
            if name == "confusable_share":
                difference = np.where(flipped[..., None], 0.0, difference)
            diffs[name] = max(diffs[name], float(difference.max()))
        ok, size_ties = _ids_agree(graph, images[:size], got, want)
        ids_ok &= ok
        ties += size_ties
    reversed_batch = runner.run(images[::-1].copy())
    across_batches = all(
        all(np.array_equal(by_batch[largest][k][:size], v) for k, v in by_batch[size].items())
        for size in batch_sizes
    ) and all(np.array_equal(by_batch[largest][k], v[::-1]) for k, v in reversed_batch.items())
    repeat = OnnxRunner(onnx_model).run(images)
    across_sessions = all(np.array_equal(repeat[k], v) for k, v in by_batch[largest].items())
    report = ParityReport(tuple(batch_sizes), diffs, ids_ok, ties, across_batches, across_sessions,
                          withheld_flips=flips)
    problems = [
        f"{name}: max |diff| {diffs[name]:.3g} > {tol:g}"
        for name, tol in TOLERANCES.items()
        if diffs[name] > tol
    ]
    if not ids_ok:
        problems.append("top-k or confusable ids differ beyond ties")
    if not flips_ok:
        problems.append("a top class's shares are withheld in one runtime only, away from the "
                        "limits")
    if not (across_batches and across_sessions):
        problems.append(
            f"outputs not bit-identical (across batches: {across_batches}, "
            f"across sessions: {across_sessions})"
        )
    if problems:
        raise ExportError("ONNX Runtime disagrees with PyTorch: " + "; ".join(problems))
    return report


@torch.no_grad()
def _torch_outputs(graph: ServingGraph, images: np.ndarray) -> dict[str, np.ndarray]:
    outputs = graph(torch.from_numpy(images))
    return {name: value.double().numpy() for name, value in outputs._asdict().items()}


@torch.no_grad()
def _withheld_flips(graph: ServingGraph, images: np.ndarray, got: dict[str, np.ndarray],
                    want: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[B, k]: where ONNX Runtime and PyTorch disagree on withholding a top class's shares,
    and PyTorch's relative distance to the withholding limits there."""
    flipped = ((got["confusable_share"][..., 0] == WITHHELD_SHARE)
               != (want["confusable_share"][..., 0] == WITHHELD_SHARE))
    stats, _ = graph.statistics(torch.from_numpy(images))
    return flipped, graph.shares(stats).margin().double().numpy()


@torch.no_grad()
def _ids_agree(
    graph: ServingGraph, images: np.ndarray, got: dict[str, np.ndarray], want: dict[str, np.ndarray]
) -> tuple[bool, int]:
    """True if ORT's ids carry PyTorch's values at each rank; also counts tied swaps.

    Confusable ids are judged by the graph's own rule: the PyTorch shares at ORT's confusable
    ids must equal PyTorch's m largest shares (of ORT's top classes).
    """
    top_ids = torch.from_numpy(got["topk_ids"])
    probs = torch.from_numpy(want["probs"])
    top_ok = torch.allclose(
        torch.gather(probs, 1, top_ids),
        torch.from_numpy(want["topk_probs"]),
        atol=PROB_TOLERANCE,
        rtol=0,
    )
    samples = graph.sampled_probabilities(torch.from_numpy(images))
    shares = probability_shares(samples.double(), top_ids, rule=graph.correlation_rule)
    conf_ok = confusable_ids_agree(
        shares, top_ids, torch.from_numpy(got["confusable_ids"]),
        torch.from_numpy(want["confusable_ids"]),
        still=torch.from_numpy(_unmoved(got) & _unmoved(want)))
    ties = int(
        (got["topk_ids"] != want["topk_ids"]).sum()
        + (got["confusable_ids"] != want["confusable_ids"]).sum()
    )
    return bool(top_ok and conf_ok), ties


def confusable_ids_agree(shares: torch.Tensor, top_ids: torch.Tensor, ids: torch.Tensor,
                         reference_ids: torch.Tensor, *, still: torch.Tensor) -> bool:
    """Whether the confusable ids ``ids`` [B, k, m] of ONNX Runtime are the graph's choice.

    Where a top class moves, by the ranking: the reference ``shares`` [B, k, K] (float64, from
    the graph's samples) at ``ids`` must equal the m largest shares of the other classes, up to
    ``SHARE_TOLERANCE`` (a different id is accepted only where its share ties). Where both
    runtimes serve no movement for it (``still`` [B, k]: every share 0, the float32 graph's
    ``Var_s(p_i) <= PROBABILITY_VARIANCE_FLOOR``), the ids are a fixed order, not a ranking:
    they must equal PyTorch's ``reference_ids``. The float64 shares are not the judge there: at
    the floor they can still rank classes that the float32 graph rightly calls unmoved."""
    classes = torch.arange(shares.shape[-1])
    others = torch.where(top_ids.unsqueeze(-1) == classes, float("-inf"), shares)
    best = torch.topk(others, ids.shape[-1], dim=-1).values
    chosen = torch.gather(others, 2, ids)
    ranked = ~still
    return bool(torch.allclose(chosen[ranked], best[ranked], atol=SHARE_TOLERANCE, rtol=0)
                and torch.equal(ids[still], reference_ids[still].to(ids.dtype)))


def _unmoved(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """[B, k]: the top classes whose served shares are all 0 (the noise does not move them)."""
    return (outputs["confusable_share"] == 0).all(-1)

