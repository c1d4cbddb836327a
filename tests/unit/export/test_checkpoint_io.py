"""Checkpoints: a round trip restores the model; every kind of bad file is a CheckpointError."""

from __future__ import annotations

import json

import pytest
import torch
from hetexport.checkpoint import load_checkpoint, save_checkpoint
from hetexport.errors import CheckpointError, InputError, SpecError
from hetexport.layers import NoiseBank
from hetexport.model import HetClassifier, ModelSpec, build_model

SMALL = {"widths": (4, 8), "feature_dim": 16}


def small_spec(head: str = "het", **overrides) -> ModelSpec:
    fields = {
        "num_classes": 5,
        "head": head,
        "num_factors": 2,
        "backbone_kwargs": SMALL,
        "eval_mc_samples": 20,
        "train_mc_samples": 20,
        "labels": tuple("abcde"),
        **overrides,
    }
    return ModelSpec(**fields)


@pytest.mark.parametrize("head", ["het", "het_pe", "het_sigmoid", "het_xl", "det"])
def test_round_trip_restores_outputs_spec_and_metrics(tmp_path, head):
    spec = small_spec(head, learn_temperature=True, temperature=1.4)
    model = build_model(spec).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"val_nll": 0.5})
    loaded = load_checkpoint(path)
    assert loaded.spec == spec and loaded.metrics == {"val_nll": 0.5}
    assert not loaded.model.training
    images = torch.randn(3, 1, 28, 28)
    noise = NoiseBank.fixed(20, model.head.num_factors, model.head.diag_noise_dim, seed=0)
    torch.testing.assert_close(
        loaded.model(images, noise=noise).probs, model(images, noise=noise).probs
    )


def test_spec_survives_json_and_names_default_labels():
    spec = ModelSpec(num_classes=3, head="het_pe", num_factors=2)
    assert spec.labels == ("class_0", "class_1", "class_2")
    assert ModelSpec.from_dict(json.loads(spec.to_json())) == spec


def test_user_backbone_by_import_path_builds_and_round_trips(tmp_path):
    spec = small_spec(backbone="torch.nn:Flatten", backbone_kwargs={})
    model = build_model(spec)
    assert model.head.in_features == 28 * 28
    loaded = load_checkpoint(save_checkpoint(tmp_path / "flat.pt", model))
    assert loaded.spec.backbone == "torch.nn:Flatten"


def test_backbone_that_does_not_give_prelogits_is_rejected_clearly():
    with pytest.raises(SpecError, match=r"pre-logits \[B, D\]"):
        build_model(small_spec(backbone="torch.nn:Identity", backbone_kwargs={}))
    with pytest.raises(SpecError, match="unknown backbone"):
        build_model(small_spec(backbone="resnet9000", backbone_kwargs={}))


def test_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")


def test_random_bytes_are_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt, truncated or not a torch file"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_spec()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(path)


def test_a_plain_state_dict_is_not_our_format(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(build_model(small_spec()).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a hetexport checkpoint"):
        load_checkpoint(path)


def test_future_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_spec()))
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_spec_are_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_spec()))
    payload = torch.load(path, weights_only=True)
    payload["spec"] = small_spec(num_classes=7, labels=()).to_json()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)


def test_invalid_spec_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model(small_spec()))
    payload = torch.load(path, weights_only=True)
    payload["spec"] = json.dumps({"num_classes": 5, "head": "bayesian"})
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="spec is missing or invalid"):
        load_checkpoint(path)


def test_saving_needs_a_spec(tmp_path):
    model = HetClassifier(torch.nn.Flatten(), build_model(small_spec()).head)
    with pytest.raises(CheckpointError, match="without a ModelSpec"):
        save_checkpoint(tmp_path / "m.pt", model)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 28, 28), r"must be \[B, 1, 28, 28\]"),
        (torch.zeros(28, 28), r"must be \[B, 1, 28, 28\]"),
        (torch.full((2, 1, 28, 28), float("nan")), "NaN or infinite"),
        (torch.zeros(2, 1, 28, 28, dtype=torch.int64), "floating point"),
    ],
)
def test_loaded_model_rejects_bad_images_with_a_clear_error(tmp_path, images, message):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", build_model(small_spec())))
    with pytest.raises(InputError, match=message):
        loaded.model.predict(images)
