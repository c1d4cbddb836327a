"""Per-input confusable precision: qualifying inputs, hits, chance, the runner-up baseline."""

from __future__ import annotations

import numpy as np
import pytest
from hetexport.studies.confusable_precision import (
    NO_CLASS,
    chance_precision,
    group_confusable_precision,
    qualifying,
    runner_up_ids,
)

GROUPS = ((0, 1, 2), (3, 4))
CLASSES = 6


def test_an_input_qualifies_when_true_class_and_top1_share_a_group() -> None:
    labels = [0, 0, 3, 5, 1]
    top1 = [2, 3, 4, 5, 1]
    assert qualifying(labels, top1, GROUPS, num_classes=CLASSES).tolist() == [
        True, False, True, False, True]


def test_precision_counts_first_confusable_classes_in_the_top1_group() -> None:
    labels = [0, 0, 3, 5, 1, 4]
    top1 = [2, 3, 4, 5, 1, 4]
    first = [1, 0, 5, 4, 0, 3]  # hit, (not qualifying), miss, (not qualifying), hit, hit
    result = group_confusable_precision(labels, top1, first, GROUPS, num_classes=CLASSES)
    assert (result.successes, result.total) == (3, 4)
    assert result.value == pytest.approx(0.75)
    assert result.low < 0.75 < result.high


def test_chance_is_the_share_of_other_classes_in_the_top1_group() -> None:
    labels, top1 = [0, 3, 5], [1, 4, 5]  # groups of 3 and of 2 qualify; class 5 is in none
    expected = np.mean([2 / 5, 1 / 5])
    assert chance_precision(labels, top1, GROUPS, num_classes=CLASSES) == pytest.approx(expected)


def test_runner_up_is_the_second_most_probable_class() -> None:
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert runner_up_ids(probs).tolist() == [2, 2]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="two groups"):
        qualifying([0], [0], ((0, 1), (1, 2)), num_classes=3)
    with pytest.raises(ValueError):
        group_confusable_precision([0, 1], [0, 1], [1], GROUPS, num_classes=CLASSES)


def test_an_answer_that_names_no_class_is_a_miss_not_the_last_class():
    """NO_CLASS (no claim) must not index the last class (which may be in the group)."""
    groups = ((0, 1, 2), (3, 4, 5))  # the last class, 5, is in a group
    labels, top1 = [3, 3], [4, 4]  # both qualify
    result = group_confusable_precision(labels, top1, [5, NO_CLASS], groups,
                                        num_classes=CLASSES)
    assert (result.successes, result.total) == (1, 2)
