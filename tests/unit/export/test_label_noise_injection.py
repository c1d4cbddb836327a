"""Injected label noise: correlated (within groups), input-dependent, seeded."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from hetexport.data import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist
from hetexport.label_noise import (
    FASHION_MNIST_NOISY_GROUPS,
    MAX_FLIP_PROBABILITY,
    inject_label_noise,
)

GROUP = (0, 1, 2)
BLENDED, NEIGHBOUR, FAR = 0, 1, 2
OUTSIDE = 3
PER_CLASS = 1000


class Synthetic(NamedTuple):
    images: torch.Tensor  # uint8 [N, 1, 8, 8]
    labels: torch.Tensor  # [N]
    mixing: torch.Tensor  # [N]: how far each image is blended towards class NEIGHBOUR


def _synthetic() -> Synthetic:
    """Class BLENDED's images mix its pattern with NEIGHBOUR's by a known amount in [0, 0.5];
    the other classes are their pattern plus a little pixel noise."""
    rng = np.random.default_rng(0)
    patterns = rng.uniform(0, 1, size=(4, 64))
    images, labels, mixing = [], [], []
    for cls in range(4):
        blend = rng.uniform(0.0, 0.5, size=PER_CLASS) if cls == BLENDED else np.zeros(PER_CLASS)
        pixels = (1 - blend)[:, None] * patterns[cls] + blend[:, None] * patterns[NEIGHBOUR]
        pixels += rng.normal(0, 0.02, size=pixels.shape)
        images.append(np.clip(pixels * 255, 0, 255).astype(np.uint8))
        labels += [cls] * PER_CLASS
        mixing.append(blend)
    return Synthetic(
        torch.from_numpy(np.concatenate(images)).reshape(-1, 1, 8, 8),
        torch.tensor(labels),
        torch.from_numpy(np.concatenate(mixing)),
    )


@pytest.fixture(scope="module")
def data() -> Synthetic:
    return _synthetic()


def _inject(data: Synthetic, *, rate: float = 0.3, seed: int = 0):
    return inject_label_noise(data.images, data.labels, num_classes=4, groups=(GROUP,),
                              rate=rate, seed=seed)


def test_labels_flip_only_within_their_group(data: Synthetic) -> None:
    noise = _inject(data)
    counts = noise.transition_counts
    assert counts[OUTSIDE].tolist() == [0, 0, 0, PER_CLASS]
    assert counts[:3, OUTSIDE].tolist() == [0, 0, 0]
    assert int(counts[:3, :3].sum() - counts.diagonal()[:3].sum()) == int(noise.flipped.sum()) > 0
    assert torch.equal(noise.flipped, noise.noisy_labels != data.labels)


def test_rate_is_the_expected_fraction_of_group_images_flipped(data: Synthetic) -> None:
    noise = _inject(data, rate=0.3)
    in_group = data.labels != OUTSIDE
    assert float(noise.flip_probability[in_group].mean()) == pytest.approx(0.3, abs=1e-6)
    assert noise.realised_rate == pytest.approx(0.3, abs=0.04)
    assert float(noise.flip_probability.max()) <= MAX_FLIP_PROBABILITY


def test_more_ambiguous_images_flip_more_often(data: Synthetic) -> None:
    noise = _inject(data, rate=0.03)  # low enough that no flip probability hits the cap
    blended = data.labels == BLENDED
    mixing, probability = data.mixing[blended], noise.flip_probability[blended]
    typical, ambiguous = mixing < 0.1, mixing > 0.4
    assert float(probability[ambiguous].mean()) > 3 * float(probability[typical].mean())
    flipped = noise.flipped[blended].float()
    assert float(flipped[ambiguous].mean()) > 2 * float(flipped[typical].mean())
    by_ambiguity = noise.flip_probability[noise.ambiguity.argsort()]
    assert bool((by_ambiguity.diff() >= 0).all())  # p(x) is a non-decreasing function of a(x)


def test_flipped_images_mostly_get_the_most_similar_class(data: Synthetic) -> None:
    noise = _inject(data)
    flipped_blended = noise.flipped & (data.labels == BLENDED) & (data.mixing > 0.3)
    new_labels = noise.noisy_labels[flipped_blended]
    assert int(flipped_blended.sum()) > 50
    assert float((new_labels == NEIGHBOUR).float().mean()) > 0.9


def test_same_seed_gives_the_same_noise_and_another_seed_other_noise(data: Synthetic) -> None:
    first, again, other = _inject(data, seed=7), _inject(data, seed=7), _inject(data, seed=8)
    assert torch.equal(first.noisy_labels, again.noisy_labels)
    assert torch.equal(first.flip_probability, other.flip_probability)  # depends on images only
    assert not torch.equal(first.noisy_labels, other.noisy_labels)


def test_zero_rate_keeps_every_label(data: Synthetic) -> None:
    noise = _inject(data, rate=0.0)
    assert torch.equal(noise.noisy_labels, data.labels) and noise.realised_rate == 0.0


@pytest.mark.parametrize("rate", [-0.1, MAX_FLIP_PROBABILITY, 0.9])
def test_a_rate_outside_the_allowed_range_is_rejected(data: Synthetic, rate: float) -> None:
    with pytest.raises(ValueError, match="noise rate"):
        _inject(data, rate=rate)


def test_overlapping_or_single_class_groups_are_rejected(data: Synthetic) -> None:
    with pytest.raises(ValueError, match="at least two"):
        inject_label_noise(data.images, data.labels, num_classes=4, groups=((0,),))
    with pytest.raises(ValueError, match="more than one group"):
        inject_label_noise(data.images, data.labels, num_classes=4, groups=((0, 1), (1, 2)))


@pytest.mark.skipif(not DEFAULT_FASHION_MNIST_DIR.is_dir(),
                    reason="prerequisite missing: Fashion-MNIST (make setup)")
def test_fashion_mnist_noise_stays_inside_the_clothing_and_footwear_groups() -> None:
    test = load_fashion_mnist(split="test")
    noise = inject_label_noise(test.images, test.labels, num_classes=10, rate=0.3, seed=0)
    group_of = {cls: g for g, group in enumerate(FASHION_MNIST_NOISY_GROUPS) for cls in group}
    for clean, noisy in zip(test.labels[noise.flipped].tolist(),
                            noise.noisy_labels[noise.flipped].tolist(), strict=True):
        assert clean in group_of and group_of[clean] == group_of.get(noisy)
    untouched = [1, 3, 8]  # Trouser, Dress, Bag
    assert not bool(noise.flipped[torch.isin(test.labels, torch.tensor(untouched))].any())
    assert noise.realised_rate == pytest.approx(0.3, abs=0.03)
