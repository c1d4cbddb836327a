"""Shape the graph's outputs (``hetcontract.HEAD_OUTPUTS``) into the API's ``Result`` models.

For each input b and the first ``top_k`` of the graph's ``k_max`` top classes:
predictions ``(topk_ids[b, j], labels[...], topk_probs[b, j])``; ``normalized_entropy =
predictive_entropy[b] / log K``; the latent correlation ``topk_correlation[b, :top_k, :top_k]``;
and per top class the confusable classes the graph chose (largest share of its probability
movement first), keeping those whose share is at least ``MIN_CONFUSABLE_SHARE``; where the
graph withheld a class's shares (``WITHHELD_SHARE``) the list is empty and ``withheld`` is true
(the key is left out otherwise, the API's default).

A calibrated model's answers also carry, per input, its ``prediction_set`` (coverage and
classes, most probable first) and its ``decision`` (accept or not, risk, delta, score), as
``hetgateway.decisions`` decided them for the batch; an uncalibrated model's carry neither.

On the request path the answer is laid out as plain dicts and lists in the shape of
``hetcontract.PredictResponse`` and serialised once by pydantic-core's JSON encoder
(``answer_json``): building and validating the nested pydantic models for every answer cost
more than the rest of the answer together. ``build_results`` validates the same layout into
``Result`` models, for code that wants them; a test holds the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hetcontract import (
    HEAD_OUTPUTS,
    MIN_CONFUSABLE_SHARE,
    WITHHELD_SHARE,
    ModelCard,
    OutputName,
    Result,
)
from pydantic import TypeAdapter
from pydantic_core import to_json

from hetgateway.decisions import Decided, DecisionTable

ANSWER_OUTPUTS: tuple[str, ...] = tuple(
    spec.name.value for spec in HEAD_OUTPUTS if spec.name is not OutputName.PROBS
)
"""The outputs the answer is built from: the contract's, less the full ``probs`` (not sent
back)."""


def answer_outputs(decisions: DecisionTable | None) -> tuple[str, ...]:
    """The outputs to ask Triton for: ``ANSWER_OUTPUTS`` and, for a calibrated model, what
    its decisions read (the full ``probs`` at least)."""
    if decisions is None:
        return ANSWER_OUTPUTS
    return ANSWER_OUTPUTS + tuple(
        name for name in decisions.output_names() if name not in ANSWER_OUTPUTS)


def build_results(
    outputs: Mapping[str, np.ndarray], card: ModelCard, *, top_k: int,
    include: Sequence[str] = (), decided: Decided | None = None,
) -> list[Result]:
    """One validated ``Result`` per input: ``result_layouts`` through pydantic in one call."""
    return _RESULTS.validate_python(
        result_layouts(outputs, card, top_k=top_k, include=include, decided=decided))


def answer_json(
    model: Mapping[str, Any], results: list[dict[str, Any]], *, request_id: str
) -> bytes:
    """The ``PredictResponse`` JSON of ``model`` (``ServedModel``'s layout) and ``results``
    (``result_layouts``), encoded once, without building pydantic models."""
    return to_json({"model": model, "results": results, "request_id": request_id})


def result_layouts(
    outputs: Mapping[str, np.ndarray], card: ModelCard, *, top_k: int,
    include: Sequence[str] = (), decided: Decided | None = None,
) -> list[dict[str, Any]]:
    """One ``Result`` per input, laid out as plain dicts, from the graph's outputs (batch
    first, as Triton returns). The outputs are sliced to ``top_k`` and turned into Python
    numbers once per batch (``tolist``); each name in ``include`` (``probs``,
    ``latent_probs``) adds that output's K values to every result; ``decided``
    (``DecisionTable.decide`` on the same outputs) adds each input's prediction set and
    decision."""
    batch = outputs[OutputName.TOPK_IDS.value].shape[0]
    per_input = {name: np.asarray(outputs[name]).reshape(batch, -1) for name in ANSWER_OUTPUTS}
    k_max = per_input[OutputName.TOPK_IDS.value].shape[1]
    ids = per_input[OutputName.TOPK_IDS.value][:, :top_k].astype(np.int64).tolist()
    probs = per_input[OutputName.TOPK_PROBS.value][:, :top_k].astype(float).tolist()
    scalars = {
        name: per_input[name][:, 0].astype(float).tolist()
        for name in (
            OutputName.PREDICTIVE_ENTROPY.value,
            OutputName.EXPECTED_ENTROPY.value,
            OutputName.MUTUAL_INFORMATION.value,
        )
    }
    correlation = per_input[OutputName.TOPK_CORRELATION.value].reshape(batch, k_max, k_max)
    confusable_ids = per_input[OutputName.CONFUSABLE_IDS.value].reshape(batch, k_max, -1)
    confusable_share = per_input[OutputName.CONFUSABLE_SHARE.value].reshape(batch, k_max, -1)
    log_k = math.log(card.num_classes)
    labels = card.labels
    results = [
        _result(
            labels,
            log_k=log_k,
            ids=ids[b],
            probs=probs[b],
            predictive_entropy=scalars[OutputName.PREDICTIVE_ENTROPY.value][b],
            expected_entropy=scalars[OutputName.EXPECTED_ENTROPY.value][b],
            mutual_information=scalars[OutputName.MUTUAL_INFORMATION.value][b],
            correlation=rows,
            confusable_ids=other_ids,
            confusable_share=other_share,
        )
        for b, (rows, other_ids, other_share) in enumerate(
            zip(
                correlation[:, :top_k, :top_k].astype(float).tolist(),
                confusable_ids[:, :top_k].astype(np.int64).tolist(),
                confusable_share[:, :top_k].astype(float).tolist(),
                strict=True,
            )
        )
    ]
    for name in include:
        vectors = np.asarray(outputs[name]).reshape(batch, -1).astype(float).tolist()
        for result, vector in zip(results, vectors, strict=True):
            result[name] = vector
    if decided is not None:
        _add_decisions(results, decided)
    return results


def _add_decisions(results: list[dict[str, Any]], decided: Decided) -> None:
    """Each result's ``prediction_set`` and ``decision`` (``PredictionSet`` and ``Decision``
    layouts), in place."""
    coverage = decided.levels.sets.coverage
    for result, classes, decision in zip(results, decided.classes, decided.decisions,
                                         strict=True):
        result["prediction_set"] = {"coverage": coverage, "classes": classes}
        result["decision"] = decision


_RESULTS = TypeAdapter(list[Result])
"""Validates a batch's answers, laid out as dicts, into ``Result`` models in one call."""


def _result(
    labels: Sequence[str],
    *,
    log_k: float,
    ids: list[int],
    probs: list[float],
    predictive_entropy: float,
    expected_entropy: float,
    mutual_information: float,
    correlation: list[list[float]],
    confusable_ids: list[list[int]],
    confusable_share: list[list[float]],
) -> dict[str, Any]:
    """One input's answer as the dict layout of ``Result``; ``ids`` etc. already cut to
    ``top_k``."""
    return {
        "predictions": [
            {"class_id": c, "label": labels[c], "probability": p}
            for c, p in zip(ids, probs, strict=True)
        ],
        "uncertainty": {
            "predictive_entropy": predictive_entropy,
            "normalized_entropy": predictive_entropy / log_k,
            "expected_entropy": expected_entropy,
            "mutual_information": mutual_information,
            "latent_correlation": {"class_ids": ids, "matrix": correlation},
            "confusable": [
                _confusable(labels, class_id, others, values)
                for class_id, others, values in zip(
                    ids, confusable_ids, confusable_share, strict=True
                )
            ],
        },
    }


def _confusable(labels: Sequence[str], class_id: int, others: list[int], values: list[float]
                ) -> dict[str, Any]:
    """One top class's ``Confusable`` layout: its listed shares, or withheld."""
    if values and values[0] == WITHHELD_SHARE:
        return {"class_id": class_id, "confused_with": [], "withheld": True}
    return {
        "class_id": class_id,
        "confused_with": [
            {"class_id": other, "label": labels[other], "share": value}
            for other, value in zip(others, values, strict=True)
            if value >= MIN_CONFUSABLE_SHARE
        ],
    }
