"""How far a served head's numbers are from the exact ones: every served quantity, per image.

For each image b (served outputs by ``hetcontract.HEAD_OUTPUTS`` name, exact ones from
``exact_answer``):

* ``probs``: ``max_k |p_served - p_exact|`` (the full p_bar);
* ``topk_probs``: ``max_j |topk_probs[j] - p_exact[topk_ids[j]]|``;
* ``predictive_entropy``, ``expected_entropy``, ``mutual_information``: ``|served - exact|``;
* ``topk_correlation``: ``max |served - exact|`` of the latent correlation (closed form in both,
  so this only shows float32 rounding);
* ``confusable_share``: ``max_{j, c} |share_served - share_exact|`` at the served top classes j
  whose probability the noise moves by at least ``SHARE_RELEVANT_STD`` (exact std) and their
  served confusable classes c, the exact share from the exact covariance by the same formula
  (``hetexport.class_correlation.shares_from_covariance``); 0 for an image without such a
  class. (Where a class's probability hardly moves, where it moves to is a ratio of two
  vanishing covariances; it is served, floored, but not a figure of merit.)

``ErrorReport.summary()`` gives the mean and the 99th percentile over images of each, the
form the model card and the benchmark record.

Typical usage::

    exact = exact_answer(latent, tau, link="softmax")
    report = served_error(outputs, exact, exact_correlation=rows, rule=SOFTMAX_RULE)
    report.summary()["probs"]           # {"mean": ..., "p99": ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from hetcontract import WITHHELD_SHARE
from torch import Tensor

from hetexport.class_correlation import CorrelationRule, shares_from_covariance
from hetexport.exact.integral import ExactAnswer

ERROR_QUANTITIES: tuple[str, ...] = (
    "probs",
    "topk_probs",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "topk_correlation",
    "confusable_share",
)
PERCENTILE = 99.0
SHARE_RELEVANT_STD = 0.01
"""Top classes whose probability's exact standard deviation under the noise is below this
(1 percentage point) are left out of the share error (module doc)."""


@dataclass(frozen=True)
class ErrorReport:
    """Per-image absolute errors ``errors[name]`` [N] and the reference's own standard error
    ``reference_error[name]`` [N] where it has one."""

    errors: dict[str, np.ndarray]
    reference_error: dict[str, np.ndarray]
    shares_moving: int = 0
    shares_withheld_count: int = 0

    @property
    def shares_withheld(self) -> float:
        """Fraction of the top classes that the noise moves (by at least
        ``SHARE_RELEVANT_STD``) whose shares the head withheld (0 where none moves)."""
        return self.shares_withheld_count / max(self.shares_moving, 1)

    @property
    def images(self) -> int:
        return int(next(iter(self.errors.values())).shape[0])

    def summary(self) -> dict[str, dict[str, float]]:
        """``{quantity: {"mean": ..., "p99": ...}}`` over the images."""
        return {name: summarise(values) for name, values in self.errors.items()}

    def largest_reference_error(self) -> float:
        """The reference's largest standard error over images and quantities."""
        return float(max((v.max() for v in self.reference_error.values()), default=0.0))


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean and 99th percentile of per-image errors."""
    return {"mean": float(np.mean(values)), "p99": float(np.percentile(values, PERCENTILE))}


def served_error(
    served: Mapping[str, np.ndarray],
    exact: ExactAnswer,
    *,
    exact_correlation: Tensor,
    rule: CorrelationRule,
) -> ErrorReport:
    """Errors of every served quantity (module doc). ``exact_correlation`` is the latent
    correlation among the served top classes [B, k, k] computed in float64."""
    probs = exact.probs.numpy()
    top_ids = np.asarray(served["topk_ids"])
    errors = {
        "probs": np.abs(served["probs"] - probs).max(1),
        "topk_probs": np.abs(served["topk_probs"] - np.take_along_axis(probs, top_ids, 1)).max(1),
        "predictive_entropy": np.abs(served["predictive_entropy"]
                                     - exact.predictive_entropy.numpy()),
        "expected_entropy": np.abs(served["expected_entropy"] - exact.expected_entropy.numpy()),
        "mutual_information": np.abs(served["mutual_information"]
                                     - exact.mutual_information.numpy()),
        "topk_correlation": np.abs(served["topk_correlation"]
                                   - exact_correlation.numpy()).reshape(len(top_ids), -1).max(1),
    }
    moving = withheld = 0
    if exact.probability_covariance is not None:
        errors["confusable_share"], moving, withheld = _share_error(served, exact, rule)
    reference = {
        name: exact.standard_error[name].numpy()
        for name in ("probs", "predictive_entropy", "expected_entropy", "mutual_information")
    }
    return ErrorReport({k: errors[k].astype(np.float64) for k in ERROR_QUANTITIES if k in errors},
                       reference, shares_moving=moving, shares_withheld_count=withheld)


def _share_error(served: Mapping[str, np.ndarray], exact: ExactAnswer,
                 rule: CorrelationRule) -> tuple[np.ndarray, int, int]:
    """Per image the largest share error of its served (not withheld) relevant top classes,
    and the counts of relevant top classes and of those withheld."""
    top_ids = torch.from_numpy(np.asarray(served["topk_ids"], dtype=np.int64))
    index = top_ids.unsqueeze(-1).expand(-1, -1, exact.probs.shape[1])
    rows = torch.gather(exact.probability_covariance, 1, index)  # [B, k, K]
    shares = shares_from_covariance(rows, top_ids, rule=rule)
    conf_ids = torch.from_numpy(np.asarray(served["confusable_ids"], dtype=np.int64))
    want = torch.gather(shares, 2, conf_ids).numpy()
    got = np.asarray(served["confusable_share"], dtype=np.float64)
    diff = np.abs(got - want)
    variance = torch.gather(rows, 2, top_ids.unsqueeze(-1)).numpy()  # [B, k, 1]
    relevant = variance >= SHARE_RELEVANT_STD**2
    withheld = got[..., :1] == WITHHELD_SHARE  # [B, k, 1]
    error = np.where(relevant & ~withheld, diff, 0.0).reshape(len(diff), -1).max(1)
    return error, int(relevant.sum()), int((relevant & withheld).sum())
