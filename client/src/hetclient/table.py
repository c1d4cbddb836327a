"""The CLI's readable answer: one row per predicted class, grouped by image.

Example (``hetclient predict shirt.png boot.png --top-k 2``)::

    image      rank  label        probability  entropy  confusable with (correlation)
    shirt.png  1     Shirt        0.581        0.93     Pullover 0.71, Coat 0.55
               2     T-shirt/top  0.310                 Shirt 0.62
    boot.png   1     Ankle boot   0.990        0.05     Sneaker 0.40

``entropy`` is the predictive entropy H[p_bar] in nats (once per image); the last column lists,
for that class, the classes whose latent logits move most with it (the HET head's class
correlation).
"""

from __future__ import annotations

from collections.abc import Sequence

from hetcontract import PredictResponse, Result

HEADER = ("image", "rank", "label", "probability", "entropy", "confusable with (correlation)")
COLUMN_GAP = "  "
PROBABILITY_DIGITS = 3
ENTROPY_DIGITS = 3
CORRELATION_DIGITS = 2
MAX_CONFUSABLE_SHOWN = 3


def format_table(names: Sequence[str], answer: PredictResponse) -> str:
    """The answer as an aligned text table; ``names`` labels the results in order."""
    if len(names) != len(answer.results):
        raise ValueError(f"{len(names)} names for {len(answer.results)} results")
    rows = [HEADER]
    for name, result in zip(names, answer.results, strict=True):
        rows.extend(_result_rows(name, result))
    widths = [max(len(row[col]) for row in rows) for col in range(len(HEADER))]
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


def _result_rows(name: str, result: Result) -> list[tuple[str, ...]]:
    confusable = {item.class_id: item.correlated for item in result.uncertainty.confusable}
    rows = []
    for rank, prediction in enumerate(result.predictions, start=1):
        first = rank == 1
        correlated = confusable.get(prediction.class_id, [])[:MAX_CONFUSABLE_SHOWN]
        rows.append(
            (
                name if first else "",
                str(rank),
                prediction.label,
                f"{prediction.probability:.{PROBABILITY_DIGITS}f}",
                f"{result.uncertainty.predictive_entropy:.{ENTROPY_DIGITS}f}" if first else "",
                ", ".join(f"{c.label} {c.correlation:.{CORRELATION_DIGITS}f}" for c in correlated),
            )
        )
    return rows
