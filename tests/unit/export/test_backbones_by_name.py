"""Backbones by name: torchvision architectures as pre-logit extractors, local initial weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hetexport.backbones import (
    build_backbone,
    feature_dim,
    import_torchvision,
    load_backbone_weights,
)
from hetexport.errors import SpecError
from torch import nn


@pytest.mark.parametrize(("arch", "dim", "removed"), [
    ("resnet18", 512, "fc"),
    ("efficientnet_b0", 1280, "classifier.1"),
    ("convnext_tiny", 768, "classifier.2"),
    ("mobilenet_v3_small", 1024, "classifier.3"),
])
def test_a_torchvision_architecture_gives_its_pre_logits_without_the_classifier(
    arch: str, dim: int, removed: str
) -> None:
    backbone = build_backbone(f"torchvision:{arch}", in_channels=3)
    assert feature_dim(backbone, (3, 32, 32)) == dim
    assert backbone.removed_classifier == removed
    assert isinstance(backbone.get_submodule(removed), nn.Identity)


def test_torchvision_imports_beside_the_cpu_torch_and_its_detection_ops_fail_only_when_called(
) -> None:
    torchvision = import_torchvision()
    assert torchvision.__version__.startswith("0.28.0")
    with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


def test_an_unknown_architecture_or_name_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="unknown torchvision classification architecture"):
        build_backbone("torchvision:resnet19")
    with pytest.raises(SpecError, match="torchvision:ARCH"):
        build_backbone("resnet18")


def test_pretrained_weights_load_from_a_local_file_and_skip_only_the_classifier(
    tmp_path: Path,
) -> None:
    torchvision = import_torchvision()
    torch.manual_seed(1)
    full = torchvision.models.resnet18()  # stands in for resnet18(weights="DEFAULT")
    torch.save(full.state_dict(), tmp_path / "resnet18.pt")
    backbone = build_backbone("torchvision:resnet18", in_channels=3)
    report = load_backbone_weights(backbone, tmp_path / "resnet18.pt")
    assert report.skipped_classifier == ("fc.weight", "fc.bias") and not report.summed_to_grey
    images = torch.randn(2, 3, 32, 32)
    full.fc = nn.Identity()
    with torch.no_grad():
        assert torch.equal(backbone.eval()(images), full.eval()(images))


def test_grey_images_read_rgb_weights_summed_over_the_colour_axis(tmp_path: Path) -> None:
    torchvision = import_torchvision()
    rgb = torchvision.models.resnet18()
    torch.save({"state_dict": rgb.state_dict()}, tmp_path / "wrapped.pt")
    grey = build_backbone("torchvision:resnet18", in_channels=1)
    report = load_backbone_weights(grey, tmp_path / "wrapped.pt")
    assert report.summed_to_grey == ("conv1.weight",)
    assert grey.conv1.in_channels == 1
    assert torch.allclose(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    pixels = torch.rand(2, 1, 32, 32)
    rgb.fc = nn.Identity()
    with torch.no_grad():  # a grey image is the RGB image (g, g, g)
        torch.testing.assert_close(grey.eval()(pixels), rgb.eval()(pixels.expand(-1, 3, -1, -1)),
                                   rtol=1e-4, atol=1e-5)


def test_weights_that_do_not_fit_name_what_is_wrong_and_load_nothing(tmp_path: Path) -> None:
    torchvision = import_torchvision()
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pt")
    backbone = build_backbone("torchvision:resnet50")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(SpecError, match=r"missing keys: .*shape mismatches: layer1\.0\.conv1"):
        load_backbone_weights(backbone, tmp_path / "resnet18.pt")
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(SpecError, match="not a readable torch state dict"):
        load_backbone_weights(backbone, tmp_path / "junk.pt")
    with pytest.raises(SpecError, match="no such file"):
        load_backbone_weights(backbone, tmp_path / "absent.pt")
