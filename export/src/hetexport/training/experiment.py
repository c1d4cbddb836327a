"""One experiment = data prepared once, then models fitted and scored on it.

Typical usage::

    data = prepare_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, noise_rate=0.3)
    fitted = fit(spec, data, config=TrainConfig(epochs=4, seed=0))
    fitted.test.nll, fitted.test_predictions.mean_correlation

The Fashion-MNIST demo trains on the NOISY training labels, holds out a NOISY validation split
(same noise) for every choice (hyperparameters, epochs), and scores on the CLEAN test set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from hetcontract import InputSpec

from hetexport.backbones import TORCHVISION_PREFIX, load_backbone_weights
from hetexport.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DataError,
    ImageDataset,
    load_fashion_mnist,
    load_image_folder,
    normalize,
)
from hetexport.label_noise import FASHION_MNIST_NOISY_GROUPS, LabelNoise, inject_label_noise
from hetexport.metrics import Metrics, classification_metrics
from hetexport.model import HetClassifier, ModelSpec, build_model
from hetexport.training.config import TrainConfig
from hetexport.training.evaluation import Predictions, predict
from hetexport.training.frozen import HeadOnFeatures, freeze, prelogits
from hetexport.training.loop import TrainResult, train_model
from hetexport.training.splits import DEFAULT_VALIDATION_FRACTION, Split, holdout_split

FASHION_MNIST_INPUT = InputSpec(
    shape=(1, 28, 28), mean=(FASHION_MNIST_MEAN,), std=(FASHION_MNIST_STD,)
)
SPLIT_SEED = 0
"""The validation split is the same for every run, so runs are compared on the same data."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation torchvision's pretrained weights were trained with (RGB, pixel / 255)."""
Normalization = Literal["folder", "imagenet"]
GREY = "L"


class PreparedData(NamedTuple):
    """Normalised float32 images ``[N, C, H, W]`` and int64 labels for the three roles.

    ``test_*`` is ``None`` when there is no clean test set (an image folder); ``noise`` is
    ``None`` when no noise was injected.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    class_names: tuple[str, ...]
    input_spec: InputSpec
    noise: LabelNoise | None


class Fitted(NamedTuple):
    """A trained model with its training record and scores (``test`` None without test set)."""

    model: HetClassifier
    training: TrainResult
    validation: Metrics
    test: Metrics | None
    test_predictions: Predictions | None


def _first(dataset: ImageDataset, limit: int | None) -> ImageDataset:
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.subset(torch.arange(limit))


def _split_data(
    images: torch.Tensor,
    labels: torch.Tensor,
    split: Split,
    *,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    class_names: tuple[str, ...],
    input_spec: InputSpec,
    noise: LabelNoise | None,
) -> PreparedData:
    """Normalised ``images`` and their ``labels`` cut by ``split`` into train and validation;
    ``test`` is (images, labels) of a clean test set, or None."""
    test_images, test_labels = test if test is not None else (None, None)
    return PreparedData(
        train_images=images[split.train],
        train_labels=labels[split.train],
        val_images=images[split.validation],
        val_labels=labels[split.validation],
        test_images=test_images,
        test_labels=test_labels,
        class_names=class_names,
        input_spec=input_spec,
        noise=noise,
    )


def prepare_fashion_mnist(
    directory: Path | str,
    *,
    noise_rate: float,
    noise_seed: int = 0,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> PreparedData:
    """Load Fashion-MNIST, inject label noise into the whole training split (see
    ``hetexport.label_noise``), hold out a noisy validation split, keep the test set clean.

    ``train_limit`` / ``test_limit`` keep only the first N images (quick runs and tests).
    """
    train = _first(load_fashion_mnist(directory, split="train"), train_limit)
    test = _first(load_fashion_mnist(directory, split="test"), test_limit)
    noise = inject_label_noise(
        train.images, train.labels, num_classes=train.num_classes,
        groups=FASHION_MNIST_NOISY_GROUPS, rate=noise_rate, seed=noise_seed,
    )
    split = holdout_split(len(train), validation_fraction=validation_fraction, seed=SPLIT_SEED)
    return _split_data(
        normalize(train.images, FASHION_MNIST_INPUT), noise.noisy_labels, split,
        test=(normalize(test.images, FASHION_MNIST_INPUT), test.labels),
        class_names=train.class_names, input_spec=FASHION_MNIST_INPUT, noise=noise,
    )


def channel_statistics(images: torch.Tensor, *, scale: float) -> tuple[tuple[float, ...], ...]:
    """Per-channel (mean, std) of uint8 images ``[N, C, H, W]`` scaled by ``1 / scale``."""
    pixels = images.to(torch.float64).div(scale).transpose(0, 1).reshape(images.shape[1], -1)
    std = pixels.std(dim=1).clamp(min=1e-3)
    return tuple(pixels.mean(dim=1).tolist()), tuple(std.tolist())


def prepare_image_folder(
    dataset: ImageDataset,
    *,
    channel_order: str,
    validation: ImageDataset | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    split_seed: int = SPLIT_SEED,
    normalization: Normalization = "folder",
) -> PreparedData:
    """An image folder as training and validation data (the user's labels as they are).

    Validation is ``validation`` (a second folder with the same class names) when given, else
    a seeded hold-out of ``validation_fraction`` of ``dataset``. The input spec's mean and std
    are the training images' channel statistics (``normalization="folder"``) or ImageNet's
    (``"imagenet"``, what pretrained torchvision weights expect; grey: their channel means).
    """
    if validation is not None and validation.class_names != dataset.class_names:
        raise DataError(
            f"the validation folder's classes {list(validation.class_names)} differ from the "
            f"training folder's {list(dataset.class_names)}"
        )
    if validation is None:
        split = holdout_split(len(dataset), validation_fraction=validation_fraction,
                              seed=split_seed)
        images, labels = dataset.images, dataset.labels
    else:
        split = Split(train=torch.arange(len(dataset)),
                      validation=torch.arange(len(dataset), len(dataset) + len(validation)))
        images = torch.cat([dataset.images, validation.images])
        labels = torch.cat([dataset.labels, validation.labels])
    channels = int(images.shape[1])
    if normalization == "imagenet":
        mean, std = _imagenet_statistics(channels)
    else:
        mean, std = channel_statistics(images[split.train], scale=255.0)
    spec = InputSpec(
        shape=tuple(images.shape[1:]), mean=mean, std=std, channel_order=channel_order
    )
    return _split_data(
        normalize(images, spec), labels, split,
        test=None, class_names=dataset.class_names, input_spec=spec, noise=None,
    )


def prepare_training_data(
    data_dir: Path,
    image_folder: Path | None,
    *,
    image_size: int,
    channel_order: str,
    noise_rate: float,
    noise_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_folder: Path | None = None,
    val_fraction: float = DEFAULT_VALIDATION_FRACTION,
    split_seed: int = SPLIT_SEED,
    normalization: Normalization = "folder",
) -> PreparedData:
    """Fashion-MNIST from ``data_dir`` with ``noise_rate`` injected (``image_folder`` None),
    else the image folder's images converted to ``channel_order`` (``L`` or ``RGB``) at
    ``image_size`` x ``image_size``, validated on ``val_folder`` or a seeded hold-out."""
    if image_folder is None:
        if val_folder is not None:
            raise DataError("a validation folder needs a training image folder beside it")
        return prepare_fashion_mnist(data_dir, noise_rate=noise_rate, noise_seed=noise_seed,
                                     train_limit=train_limit, test_limit=test_limit)
    count = 1 if channel_order == GREY else 3
    probe = InputSpec(shape=(count, image_size, image_size), mean=(0.0,) * count,
                      std=(1.0,) * count, channel_order=channel_order)
    validation = None if val_folder is None else load_image_folder(val_folder, input_spec=probe)
    return prepare_image_folder(load_image_folder(image_folder, input_spec=probe),
                                channel_order=channel_order, validation=validation,
                                validation_fraction=val_fraction, split_seed=split_seed,
                                normalization=normalization)


def default_normalization(backbone: str) -> Normalization:
    """ImageNet's statistics for a torchvision backbone (what pretrained weights expect), the
    training images' own for any other."""
    return "imagenet" if backbone.startswith(TORCHVISION_PREFIX) else "folder"


def _imagenet_statistics(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if channels == len(IMAGENET_MEAN):
        return IMAGENET_MEAN, IMAGENET_STD
    return ((sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels)


def fit(
    spec: ModelSpec,
    data: PreparedData,
    *,
    config: TrainConfig,
    init_weights: str | os.PathLike[str] | None = None,
) -> Fitted:
    """Build ``spec`` with weights seeded by ``config.seed`` (the backbone's from the local
    state dict ``init_weights`` when given), train it on ``data.train_*`` (best epoch by
    validation NLL; only the head when ``config.freeze_backbone``), and score it on
    validation and, if present, test."""
    torch.manual_seed(config.seed)
    model = build_model(spec)
    if init_weights is not None:
        load_backbone_weights(model.backbone, init_weights)
    if config.freeze_backbone:
        training = _train_head_only(model, data, config=config)
    else:
        training = train_model(
            model, data.train_images, data.train_labels, data.val_images, data.val_labels,
            config=config,
        )
    test_predictions = test = None
    if data.test_images is not None and data.test_labels is not None:
        test_predictions = predict(model, data.test_images, batch_size=config.eval_batch_size)
        test = classification_metrics(test_predictions.probs, data.test_labels.numpy())
    return Fitted(model, training, training.best.validation, test, test_predictions)


def _train_head_only(model: HetClassifier, data: PreparedData, *, config: TrainConfig
                     ) -> TrainResult:
    """Freeze the backbone, cache its pre-logits once, train ``model.head`` on them."""
    freeze(model.backbone)
    model.backbone.eval()
    torch.set_num_threads(config.num_threads)
    train_features = prelogits(model.backbone, data.train_images,
                               batch_size=config.eval_batch_size)
    val_features = prelogits(model.backbone, data.val_images, batch_size=config.eval_batch_size)
    return train_model(HeadOnFeatures(model.head), train_features, data.train_labels,
                       val_features, data.val_labels, config=config)


def fitted_metrics(fitted: Fitted) -> dict[str, Any]:
    """Flat JSON-ready figures (for the metrics file and the model card)."""
    figures: dict[str, Any] = {"best_epoch": fitted.training.best_epoch}
    figures.update({f"val_{k}": v for k, v in fitted.validation.as_dict().items()})
    if fitted.test is not None:
        figures.update({f"test_{k}": v for k, v in fitted.test.as_dict().items()})
    return figures
