"""The best F1 a ranking allows: how far a label audit's threshold is from the best one, and how
far its ranking is from any useful one.

An audit ranks images by a score and flags the top ones. With the true wrong labels known (a
benchmark injects them), flagging the n highest scores gives ``TP(n)`` hits and

    F1(n) = 2 TP(n) / (n + W),     W = the number of wrong labels,

and ``best_f1 = max_n F1(n)`` is the F1 of the best threshold chosen in hindsight. No method
can pick that threshold without the labels, so it bounds every rule that flags by this score:
when it is below a target, no threshold meets it and only a better ranking (a better model)
can.

Typical usage::

    from ranking_bound import best_f1

    best_f1(scores, wrong)     # scores [N] (higher: more likely wrong), wrong [N] bool
"""

from __future__ import annotations

import numpy as np


def best_f1(score: np.ndarray, wrong: np.ndarray) -> float:
    """``max_n 2 TP(n) / (n + W)`` over the n highest ``score`` (module doc); ties keep the
    input order. 0.0 when there are no images or no wrong labels among them."""
    wrong = np.asarray(wrong, dtype=bool)
    if not wrong.any():
        return 0.0
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    hits = np.cumsum(wrong[order])
    flagged = np.arange(1, len(order) + 1)
    return float((2 * hits / (flagged + hits[-1])).max())
