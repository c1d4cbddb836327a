"""The CLI's readable answer: one row per predicted class, grouped by image.

Example (``hetclient predict shirt.png boot.png --top-k 2``)::

    image      rank  label        probability  entropy  probability moves to (share)  ...
    shirt.png  1     Shirt        0.581        0.93     T-shirt/top 0.62, Pullover 0.21
               2     T-shirt/top  0.310                 Shirt 0.85
    boot.png   1     Ankle boot   0.990        0.05     Sneaker 0.74

``entropy`` is the predictive entropy H[p_bar] in nats (once per image); the next column
lists, for that class, the classes its probability moves to under the model's learned noise,
with their share of that movement (``hetcontract.Confusable``; empty for a deterministic
model). A calibrated model's answer adds two columns on each image's first row:

    ...  could be (90 % coverage)  decision
    ...  Shirt, T-shirt/top        send to review
    ...  Ankle boot                accept at 5 % risk

the classes its label is among with the stated coverage (the prediction set), and whether its
top class may be used as it is, with at most the stated error among accepted answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from hetcontract import PredictResponse, Result

HEADER = ("image", "rank", "label", "probability", "entropy", "probability moves to (share)")
COLUMN_GAP = "  "
PROBABILITY_DIGITS = 3
ENTROPY_DIGITS = 3
SHARE_DIGITS = 2
MAX_CONFUSABLE_SHOWN = 3
WITHHELD_TEXT = "withheld (too uncertain)"
"""Shown instead of the shares where the model withheld them (``Confusable.withheld``)."""


def format_table(names: Sequence[str], answer: PredictResponse) -> str:
    """The answer as an aligned text table; ``names`` labels the results in order."""
    if len(names) != len(answer.results):
        raise ValueError(f"{len(names)} names for {len(answer.results)} results")
    decided = next((r for r in answer.results if r.prediction_set and r.decision), None)
    header = HEADER if decided is None else (*HEADER, *_decision_header(decided))
    rows = [header]
    for name, result in zip(names, answer.results, strict=True):
        rows.extend(_result_rows(name, result, decisions=decided is not None))
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = [
        COLUMN_GAP.join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    model = answer.model
    footer = (
        f"model {model.name} v{model.version}: {model.num_classes} classes, "
        f"{model.mc_samples} MC samples, temperature {model.temperature:g}"
    )
    return "\n".join(line.rstrip() for line in lines) + "\n" + footer


def decision_words(result: Result) -> tuple[str, str]:
    """A reviewer's words for a result's set and decision: ``("Shirt, T-shirt/top",
    "send to review")``, ``("Ankle boot", "accept at 5 % risk")``; an empty set reads
    ``"none (unlike the calibration images)"``."""
    if result.prediction_set is None or result.decision is None:
        return "", ""
    classes = ", ".join(member.label for member in result.prediction_set.classes)
    verdict = (f"accept at {_percent(result.decision.risk)} risk" if result.decision.accept
               else "send to review")
    return classes or "none (unlike the calibration images)", verdict


def _decision_header(result: Result) -> tuple[str, str]:
    assert result.prediction_set is not None
    return f"could be ({_percent(result.prediction_set.coverage)} coverage)", "decision"


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


def _result_rows(name: str, result: Result, *, decisions: bool = False
                 ) -> list[tuple[str, ...]]:
    confusable = {item.class_id: item.confused_with for item in result.uncertainty.confusable}
    withheld = {item.class_id for item in result.uncertainty.confusable if item.withheld}
    words = decision_words(result)
    rows = []
    for rank, prediction in enumerate(result.predictions, start=1):
        first = rank == 1
        moves_to = confusable.get(prediction.class_id, [])[:MAX_CONFUSABLE_SHOWN]
        rows.append(
            (
                name if first else "",
                str(rank),
                prediction.label,
                f"{prediction.probability:.{PROBABILITY_DIGITS}f}",
                f"{result.uncertainty.predictive_entropy:.{ENTROPY_DIGITS}f}" if first else "",
                WITHHELD_TEXT if prediction.class_id in withheld
                else ", ".join(f"{c.label} {c.share:.{SHARE_DIGITS}f}" for c in moves_to),
                *((words if first else ("", "")) if decisions else ()),
            )
        )
    return rows
