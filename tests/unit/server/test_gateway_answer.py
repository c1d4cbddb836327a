"""The graph's outputs become the API's results: the first top_k classes, their labels, the
normalised entropy and the matching block of the correlation matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hetcontract import WITHHELD_SHARE, InputSpec, ModelCard
from hetgateway.answer import answer_json, build_results, result_layouts

K, K_MAX, M = 4, 3, 2
CARD = ModelCard(name="m", head="het", num_classes=K, labels=["a", "b", "c", "d"],
                 num_factors=1, mc_samples=10, temperature=1.0, top_k=K_MAX, num_confusable=M,
                 input=InputSpec(shape=(1, 2, 2), mean=(0.0,), std=(1.0,)))


def outputs(*, scalar_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    batch = 2
    correlation = np.stack([np.eye(K_MAX, dtype=np.float32) + 0.1 * b for b in range(batch)])
    return {
        "topk_ids": np.array([[2, 0, 1], [3, 1, 0]], np.int64),
        "topk_probs": np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], np.float32),
        "predictive_entropy": np.array([0.9, 1.1], np.float32).reshape(scalar_shape),
        "expected_entropy": np.array([0.7, 1.0], np.float32).reshape(scalar_shape),
        "mutual_information": np.array([0.2, 0.1], np.float32).reshape(scalar_shape),
        "topk_correlation": correlation,
        "confusable_ids": np.array([[[0, 1], [2, 3], [0, 3]], [[1, 0], [3, 2], [1, 2]]]),
        "confusable_share": np.array([[[0.7, 0.3], [0.5, 0.005], [0.0, 0.0]],
                                      [[0.9, 0.1], [0.6, 0.4], [1.0, 0.0]]], np.float32),
    }


@pytest.mark.parametrize("scalar_shape", [(2,), (2, 1)], ids=["[B]", "[B,1]"])
def test_results_keep_the_first_top_k_classes_with_their_labels(scalar_shape):
    results = build_results(outputs(scalar_shape=scalar_shape), CARD, top_k=2)
    assert [[(p.class_id, p.label) for p in r.predictions] for r in results] == [
        [(2, "c"), (0, "a")], [(3, "d"), (1, "b")]]
    assert results[0].predictions[0].probability == pytest.approx(0.6)
    u = results[1].uncertainty
    assert u.predictive_entropy == pytest.approx(1.1)
    assert u.normalized_entropy == pytest.approx(1.1 / math.log(K))
    assert u.mutual_information == pytest.approx(0.1)
    assert u.latent_correlation.class_ids == [3, 1]
    np.testing.assert_allclose(u.latent_correlation.matrix, [[1.1, 0.1], [0.1, 1.1]], atol=1e-6)
    assert [c.class_id for c in u.confusable] == [3, 1]
    assert [(c.class_id, c.label) for c in u.confusable[0].confused_with] == [(1, "b"), (0, "a")]
    assert [c.share for c in u.confusable[0].confused_with] == pytest.approx([0.9, 0.1])


def test_confusable_lists_only_classes_that_take_a_real_share():
    """A share under MIN_CONFUSABLE_SHARE (1 %) is not listed: a class whose probability the
    noise does not move (all shares 0, as for a deterministic head) lists nothing."""
    results = build_results(outputs(scalar_shape=(2,)), CARD, top_k=3)
    first = results[0].uncertainty.confusable
    assert [[c.class_id for c in entry.confused_with] for entry in first] == [[0, 1], [2], []]


def test_withheld_shares_are_said_so_with_an_empty_list():
    """The graph withholds a top class's shares (every one -1) where its samples cannot place
    the movement: the answer lists nothing for it and says ``withheld``; other classes are
    as before, ``withheld`` false (left out of the JSON)."""
    out = outputs(scalar_shape=(2,))
    out["confusable_share"][0, 1] = WITHHELD_SHARE
    results = build_results(out, CARD, top_k=3)
    first = results[0].uncertainty.confusable
    assert [entry.withheld for entry in first] == [False, True, False]
    assert first[1].confused_with == []
    assert [c.class_id for c in first[0].confused_with] == [0, 1]
    layout = answer_json({}, result_layouts(out, CARD, top_k=3), request_id="r")
    assert b'"withheld":true' in layout and layout.count(b'"withheld"') == 1
