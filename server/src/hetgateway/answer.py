"""Shape the graph's outputs (``hetcontract.HEAD_OUTPUTS``) into the API's ``Result`` models.

For each input b and the first ``top_k`` of the graph's ``k_max`` top classes:
predictions ``(topk_ids[b, j], labels[...], topk_probs[b, j])``; ``normalized_entropy =
predictive_entropy[b] / log K``; the class correlation ``topk_correlation[b, :top_k, :top_k]``;
and per top class its ``m`` most correlated other classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from hetcontract import (
    ClassCorrelation,
    Confusable,
    Correlated,
    ModelCard,
    OutputName,
    Prediction,
    Result,
    Uncertainty,
)

ANSWER_OUTPUTS: tuple[str, ...] = (
    OutputName.TOPK_IDS.value,
    OutputName.TOPK_PROBS.value,
    OutputName.PREDICTIVE_ENTROPY.value,
    OutputName.EXPECTED_ENTROPY.value,
    OutputName.MUTUAL_INFORMATION.value,
    OutputName.TOPK_CORRELATION.value,
    OutputName.CONFUSABLE_IDS.value,
    OutputName.CONFUSABLE_CORRELATION.value,
)
"""The outputs the answer is built from (the full ``probs`` is not sent back)."""


def build_results(
    outputs: Mapping[str, np.ndarray], card: ModelCard, *, top_k: int
) -> list[Result]:
    """One ``Result`` per input from the graph's outputs (batch first, as Triton returns)."""
    batch = outputs[OutputName.TOPK_IDS.value].shape[0]
    per_input = {name: np.asarray(outputs[name]).reshape(batch, -1) for name in ANSWER_OUTPUTS}
    k_max = per_input[OutputName.TOPK_IDS.value].shape[1]
    correlation = per_input[OutputName.TOPK_CORRELATION.value].reshape(batch, k_max, k_max)
    confusable_ids = per_input[OutputName.CONFUSABLE_IDS.value].reshape(batch, k_max, -1)
    confusable_corr = per_input[OutputName.CONFUSABLE_CORRELATION.value].reshape(
        batch, k_max, -1
    )
    log_k = math.log(card.num_classes)
    return [
        _result(
            card,
            top_k=top_k,
            log_k=log_k,
            ids=per_input[OutputName.TOPK_IDS.value][b],
            probs=per_input[OutputName.TOPK_PROBS.value][b],
            predictive_entropy=float(per_input[OutputName.PREDICTIVE_ENTROPY.value][b, 0]),
            expected_entropy=float(per_input[OutputName.EXPECTED_ENTROPY.value][b, 0]),
            mutual_information=float(per_input[OutputName.MUTUAL_INFORMATION.value][b, 0]),
            correlation=correlation[b],
            confusable_ids=confusable_ids[b],
            confusable_corr=confusable_corr[b],
        )
        for b in range(batch)
    ]


def _result(
    card: ModelCard,
    *,
    top_k: int,
    log_k: float,
    ids: np.ndarray,
    probs: np.ndarray,
    predictive_entropy: float,
    expected_entropy: float,
    mutual_information: float,
    correlation: np.ndarray,
    confusable_ids: np.ndarray,
    confusable_corr: np.ndarray,
) -> Result:
    class_ids = [int(i) for i in ids[:top_k]]
    predictions = [
        Prediction(class_id=c, label=card.labels[c], probability=float(p))
        for c, p in zip(class_ids, probs[:top_k], strict=True)
    ]
    confusable = [
        Confusable(
            class_id=class_ids[j],
            correlated=[
                Correlated(class_id=int(other), label=card.labels[int(other)],
                           correlation=float(value))
                for other, value in zip(confusable_ids[j], confusable_corr[j], strict=True)
            ],
        )
        for j in range(top_k)
    ]
    return Result(
        predictions=predictions,
        uncertainty=Uncertainty(
            predictive_entropy=predictive_entropy,
            normalized_entropy=predictive_entropy / log_k,
            expected_entropy=expected_entropy,
            mutual_information=mutual_information,
            class_correlation=ClassCorrelation(
                class_ids=class_ids,
                matrix=correlation[:top_k, :top_k].astype(float).tolist(),
            ),
            confusable=confusable,
        ),
    )
