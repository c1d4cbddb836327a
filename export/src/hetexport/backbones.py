"""Backbones: images [B, C, H, W] -> pre-logits phi [B, D] for a HET head.

Any ``nn.Module`` with that contract works as a backbone (that is how users bring their own
model); this module holds the demo's small CNN, a by-name factory for ``ModelSpec`` (built-in
names, ``torchvision:ARCH`` and ``package.module:factory``), local initial weights
(``load_backbone_weights``: nothing is ever downloaded), a helper that finds D and
``eval_mode``, which runs a block with a module in eval mode.

Typical usage::

    backbone = build_backbone("small_cnn", in_channels=1)
    backbone = build_backbone("torchvision:resnet18", in_channels=3)   # fc removed: [B, 512]
    load_backbone_weights(backbone, "weights/resnet18.pt")              # a local state dict
    backbone = build_backbone("mypackage.models:make_resnet", pretrained=False)   # your own
    dim = feature_dim(backbone, (1, 28, 28))
"""

from __future__ import annotations

import importlib
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from hetexport.errors import SpecError


class SmallCNN(nn.Module):
    """Two conv blocks and a dense layer for small grey images (Fashion-MNIST, 28x28).

    ``[B, C, H, W] -> conv3x3(w1)-ReLU-maxpool2 -> conv3x3(w2)-ReLU-maxpool2 -> flatten
    -> linear(feature_dim)-ReLU -> [B, feature_dim]``. At the defaults (8, 16, 128) it holds
    about 0.1 M parameters (about 0.5 MB of ONNX) and trains a Fashion-MNIST epoch on two
    CPU cores in well under a minute.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        widths: tuple[int, int] = (8, 16),
        feature_dim: int = 128,
        input_size: tuple[int, int] = (28, 28),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        first, second = widths
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = second * (input_size[0] // 4) * (input_size[1] // 4)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, feature_dim), nn.ReLU())

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.features(images))


BUILTIN_BACKBONES: Mapping[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}
TORCHVISION_PREFIX = "torchvision:"
REMOVED_CLASSIFIER_ATTR = "removed_classifier"
"""Attribute a torchvision backbone carries: the module path of the classifier it dropped
(``"fc"``, ``"classifier.1"``), whose keys a full state dict may still hold."""
_TORCHVISION_OPS = {  # ops torchvision 0.28 registers fake kernels for whether or not its C++
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",  # library loaded
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def default_backbone_kwargs(name: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """The keyword arguments a backbone needs for images of ``input_shape`` [C, H, W]: the
    built-in CNN's input channels and size, a torchvision architecture's channel count,
    nothing for a user's factory."""
    if name in BUILTIN_BACKBONES:
        return {"in_channels": input_shape[0], "input_size": list(input_shape[1:])}
    if name.startswith(TORCHVISION_PREFIX):
        return {"in_channels": input_shape[0]}
    return {}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A backbone by name: a built-in (``"small_cnn"``), a torchvision architecture
    (``"torchvision:resnet18"``, see ``torchvision_backbone``) or ``"package.module:factory"``.

    The factory is called with ``kwargs`` and must return an ``nn.Module`` giving [B, D].
    """
    if name in BUILTIN_BACKBONES:
        return BUILTIN_BACKBONES[name](**kwargs)
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_backbone(name.removeprefix(TORCHVISION_PREFIX), **kwargs)
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        known = ", ".join(sorted(BUILTIN_BACKBONES))
        raise SpecError(
            f"unknown backbone {name!r}: use one of {known}, 'torchvision:ARCH' "
            "or 'package.module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import backbone factory {name!r}: {exc}") from exc
    backbone = factory(**kwargs)
    if not isinstance(backbone, nn.Module):
        raise SpecError(
            f"backbone factory {name!r} returned {type(backbone).__name__}, not nn.Module"
        )
    return backbone


def import_torchvision() -> Any:
    """``torchvision``, importable beside the CPU build of torch.

    PyPI's torchvision 0.28.0 (the release for torch 2.13) is built against CUDA torch: its
    C++ library needs ``libtorch_cuda.so`` and does not load beside the CPU wheel, and its
    ``_meta_registrations`` then fails on ``register_fake("torchvision::nms")`` ("operator
    torchvision::nms does not exist"). Declaring the schemas of the two ops it registers
    unconditionally lets the import finish; the models (pure PyTorch) work, and only the
    detection ops (``torchvision.ops.nms`` ...) stay unavailable: calling one raises
    torchvision's own "Couldn't load custom C++ ops".
    """
    ops = torch.ops.torchvision if hasattr(torch.ops, "torchvision") else None
    for op, schema in _TORCHVISION_OPS.items():
        if ops is None or not hasattr(ops, op):
            torch.library.define(f"torchvision::{op}", schema)
    try:
        import torchvision
    except ImportError as exc:
        raise SpecError(
            "torchvision backbones need torchvision: pip install 'hetexport[vision]'"
        ) from exc
    return torchvision


def torchvision_backbone(arch: str, *, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """A torchvision classification architecture without its classifier: [B, C, H, W] ->
    the pre-logits [B, D] its last ``nn.Linear`` would have read (ResNet: the pooled features,
    ``fc`` dropped; EfficientNet/ConvNeXt/MobileNet: ``classifier``'s last Linear dropped,
    ConvNeXt keeps its LayerNorm).

    Always random weights (``weights=None``): pretrained ones are loaded from a local file by
    ``load_backbone_weights``. ``in_channels=1`` (grey) makes the first convolution read one
    channel; a 3-channel state dict is summed over its colour axis when loaded. ``kwargs`` go
    to ``torchvision.models.get_model``.
    """
    torchvision = import_torchvision()
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise SpecError(
            f"unknown torchvision classification architecture {arch!r}; for example "
            "resnet18, resnet50, efficientnet_b0, convnext_tiny, mobilenet_v3_small"
        )
    if in_channels not in (1, 3):
        raise SpecError(f"torchvision backbones read 1 or 3 channels, not {in_channels}")
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SpecError(f"torchvision model {arch!r} has no Linear classifier to remove")
    classifier_path, _ = linears[-1]
    _replace_module(model, classifier_path, nn.Identity())
    setattr(model, REMOVED_CLASSIFIER_ATTR, classifier_path)
    if in_channels == 1:
        _make_first_conv_grey(model)
    return model


def _replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


def _make_first_conv_grey(model: nn.Module) -> None:
    path, conv = next(
        (p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3
    )
    grey = nn.Conv2d(
        1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        grey.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            grey.bias.copy_(conv.bias)
    _replace_module(model, path, grey)


class WeightsReport(NamedTuple):
    """What ``load_backbone_weights`` did: tensors loaded, classifier keys skipped, and the
    convolutions whose RGB kernels were summed to read grey images."""

    loaded: int
    skipped_classifier: tuple[str, ...]
    summed_to_grey: tuple[str, ...]


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike[str]) -> WeightsReport:
    """Load a local state dict (``torch.save(model.state_dict(), path)``; also a dict holding
    it under ``"state_dict"`` or ``"model"``) into ``backbone``, strictly.

    The keys of a classifier the backbone dropped (``REMOVED_CLASSIFIER_ATTR``) are skipped;
    an RGB kernel ``[O, 3, k, k]`` for a grey convolution ``[O, 1, k, k]`` is summed over its
    colour axis (a grey pixel g seen as (g, g, g)). Any other missing or unexpected key or
    shape mismatch raises SpecError naming them: nothing is loaded partially.
    """
    state = _read_state_dict(Path(path))
    removed = getattr(backbone, REMOVED_CLASSIFIER_ATTR, None)
    skipped = tuple(k for k in state if removed and k.startswith(f"{removed}."))
    wanted = backbone.state_dict()
    given = {k: v for k, v in state.items() if k not in skipped}
    missing = sorted(set(wanted) - set(given))
    unexpected = sorted(set(given) - set(wanted))
    summed: list[str] = []
    mismatched: list[str] = []
    for key in sorted(set(wanted) & set(given)):
        value, target = given[key], wanted[key]
        if value.shape == target.shape:
            continue
        if (value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3
                and target.shape[1] == 1 and value.shape[0] == target.shape[0]
                and value.shape[2:] == target.shape[2:]):
            given[key] = value.sum(dim=1, keepdim=True)
            summed.append(key)
        else:
            mismatched.append(f"{key}: file {tuple(value.shape)}, model {tuple(target.shape)}")
    if missing or unexpected or mismatched:
        raise SpecError(
            f"initial weights {path} do not fit the backbone: "
            + "; ".join(part for part in (
                _listing("missing keys", missing), _listing("unexpected keys", unexpected),
                _listing("shape mismatches", mismatched)) if part)
        )
    backbone.load_state_dict(given, strict=True)
    return WeightsReport(len(given), skipped, tuple(summed))


def _listing(what: str, items: list[str], *, shown: int = 5) -> str:
    if not items:
        return ""
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return f"{len(items)} {what}: {', '.join(items[:shown])}{more}"


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise SpecError(f"initial weights {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError,
            OSError, IndexError) as exc:
        raise SpecError(
            f"initial weights {path}: not a readable torch state dict ({type(exc).__name__}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from exc
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise SpecError(f"initial weights {path}: not a state dict (names -> tensors)")
    return data


def feature_dim(backbone: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """D of a backbone's pre-logits: its ``feature_dim`` attribute, or one dry run on zeros.

    Raises SpecError when the backbone does not give [B, D] for input [B, *input_shape].
    """
    declared = getattr(backbone, "feature_dim", None)
    if isinstance(declared, int):
        return declared
    with eval_mode(backbone), torch.no_grad():
        out = backbone(torch.zeros(2, *input_shape))
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise SpecError(
            f"a backbone must map [B, C, H, W] to pre-logits [B, D]; got {shape} for "
            f"input [2, {', '.join(map(str, input_shape))}] "
            "(drop its classifier, flatten its output)"
        )
    return int(out.shape[1])


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; its train/eval mode is restored on leaving it,
    also on an exception."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
