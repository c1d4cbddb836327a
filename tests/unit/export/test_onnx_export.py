"""ONNX export: contract outputs, parity with PyTorch, determinism, and clean failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hetcontract import HEAD_OUTPUTS, OPTIONAL_HEAD_OUTPUTS, ModelCard
from hetexport.checkpoint import save_checkpoint
from hetexport.class_correlation import (
    MOVEMENT_RELATIVE_ERROR_MAX,
    PROBABILITY_VARIANCE_FLOOR,
    SHARE_STANDARD_ERROR_MAX,
    WITHHELD_SHARE,
)
from hetexport.errors import ExportError, InputError
from hetexport.layers import NoiseBank, bernoulli_entropy, categorical_entropy
from hetexport.layers.noise_bank import DEFAULT_BANK_DESIGN
from hetexport.model import HetClassifier, ModelSpec, build_model
from hetexport.onnx.export import export_to_repository
from hetexport.onnx.parity import ENTROPY_TOLERANCE, PARITY_SEED, PROB_TOLERANCE
from hetexport.onnx.runner import OnnxRunner
from hetexport.repo.pbtxt import parse_config
from onnx import numpy_helper

K, S, TOP_K, M = 6, 64, 3, 2
SMALL = {"widths": (4, 8), "feature_dim": 16}
VARIANTS = {
    "het": {"head": "het", "num_factors": 3},
    "het_diag": {"head": "het", "num_factors": 0},
    "het_pe": {"head": "het_pe", "num_factors": 2},
    "het_sigmoid": {"head": "het_sigmoid", "num_factors": 3},
    "het_xl": {"head": "het_xl", "num_factors": 2},
    "det": {"head": "det"},
}
DIAG_NOISE_WIDTH = {"het_xl": SMALL["feature_dim"]}
"""Width of the baked ``noise_diag``: K, except HET-XL's pre-logit noise z_D [S, D]."""


def spec_for(variant: str) -> ModelSpec:
    return ModelSpec(
        num_classes=K,
        backbone_kwargs=SMALL,
        train_mc_samples=16,
        eval_mc_samples=S,
        labels=tuple(f"c{k}" for k in range(K)),
        learn_temperature=True,
        temperature=1.3,
        **VARIANTS[variant],
    )


def trained_one_step(variant: str) -> HetClassifier:
    torch.manual_seed(0)
    model = build_model(spec_for(variant)).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.randn(8, 1, 28, 28))
    model.head.loss(out, torch.arange(8) % K).backward()
    optimizer.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every variant trained one step and exported once into one repository."""
    repo = tmp_path_factory.mktemp("model_repo")
    reports = {
        variant: export_to_repository(
            trained_one_step(variant),
            repo,
            f"m_{variant}",
            mc_samples=S,
            top_k=TOP_K,
            num_confusable=M,
            metrics={"note": variant},
            seed=3,
        )
        for variant in VARIANTS
    }
    return repo, reports


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((64, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_writes_the_model_repository_layout(exported, variant):
    repo, reports = exported
    model_dir = repo / f"m_{variant}"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "1",
        "config.pbtxt",
        "labels.txt",
        "model_card.json",
    ]
    assert (model_dir / "1" / "model.onnx").stat().st_size == reports[variant].onnx_bytes
    assert (model_dir / "labels.txt").read_text().split() == [f"c{k}" for k in range(K)]
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "no staging leftovers"


GRAPH_OUTPUTS = (*HEAD_OUTPUTS, *OPTIONAL_HEAD_OUTPUTS)
"""An exported graph has the contract's outputs, then its optional ones (``latent_probs``)."""


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_card_validates_and_config_outputs_are_the_contract(exported, variant):
    repo, _ = exported
    model_dir = repo / f"m_{variant}"
    card = ModelCard.model_validate_json((model_dir / "model_card.json").read_text())
    assert card.head == VARIANTS[variant]["head"] and card.num_classes == K
    assert card.mc_samples == (1 if variant == "det" else S)
    assert card.top_k == TOP_K and card.num_confusable == M and card.metrics == {"note": variant}
    assert card.temperature == pytest.approx(1.3, abs=0.2)
    config = parse_config((model_dir / "config.pbtxt").read_text())
    assert [o.name for o in config.outputs] == [spec.name.value for spec in GRAPH_OUTPUTS]
    assert [o.data_type for o in config.outputs] == [spec.triton_dtype for spec in GRAPH_OUTPUTS]
    assert ModelCard.model_validate(config.model_card()) == card


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_graph_outputs_match_head_outputs_names_types_and_shapes(exported, images, variant):
    _, reports = exported
    runner = OnnxRunner(reports[variant].onnx_path)
    out = runner.run(images[:5])
    sizes = {"B": 5, "k_max": TOP_K, "m": M, "K": K}
    assert list(out) == [spec.name.value for spec in GRAPH_OUTPUTS]
    for spec in GRAPH_OUTPUTS:
        assert out[spec.name.value].dtype == np.dtype(spec.numpy_dtype)
        assert out[spec.name.value].shape == tuple(sizes[s] for s in spec.shape)


def pytorch_probs(variant: str, images: np.ndarray) -> np.ndarray:
    """The trained model's p_bar in PyTorch with the noise bank the export bakes (seed 3, the
    default design)."""
    model = trained_one_step(variant)
    noise = None
    if variant != "det":
        noise = NoiseBank.fixed(S, VARIANTS[variant]["num_factors"],
                                DIAG_NOISE_WIDTH.get(variant, K), seed=3,
                                design=DEFAULT_BANK_DESIGN)
    with torch.no_grad():
        return model(torch.from_numpy(images), noise=noise).probs.double().numpy()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_parity_with_pytorch_at_batch_sizes_1_7_64_is_in_the_card(exported, variant):
    """The card's parity figure is measured again here, on the exporter's seeded images: the
    ONNX graph in ONNX Runtime against the trained model's own forward in PyTorch."""
    _, reports = exported
    parity = reports[variant].card.parity
    assert parity["batch_sizes"] == [1, 7, 64]
    images = np.random.default_rng(PARITY_SEED).standard_normal((64, 1, 28, 28))
    images = images.astype(np.float32)
    runner = OnnxRunner(reports[variant].onnx_path)
    measured = max(
        float(np.abs(runner.run(images[:size])["probs"] - pytorch_probs(variant, images[:size]))
              .max())
        for size in (1, 7, 64)
    )
    assert measured <= PROB_TOLERANCE
    card = parity["max_abs_diff"]["probs"]
    assert card == pytest.approx(measured, rel=0.5, abs=1e-7), (
        f"the card says {card:.3g}, measured {measured:.3g}")


@pytest.mark.parametrize("variant", ["het", "het_pe", "het_sigmoid", "het_xl"])
def test_onnx_matches_an_independent_pytorch_forward_with_the_baked_noise(
    exported, images, variant
):
    _, reports = exported
    model_proto = onnx.load(reports[variant].onnx_path)
    bank = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
        for t in model_proto.graph.initializer
        if t.name.startswith("noise_")
    }
    assert bank["noise_factors"].shape == (S, VARIANTS[variant]["num_factors"])
    width = DIAG_NOISE_WIDTH.get(variant, K)
    assert bank["noise_diag"].shape == (S, width)
    fixed = NoiseBank.fixed(S, VARIANTS[variant]["num_factors"], width, seed=3,
                            design=DEFAULT_BANK_DESIGN)
    assert torch.equal(bank["noise_diag"], fixed.diag_noise)
    model = trained_one_step(variant)
    with torch.no_grad():
        want = model(torch.from_numpy(images), noise=fixed)
    got = OnnxRunner(reports[variant].onnx_path).run(images)
    np.testing.assert_allclose(got["probs"], want.probs.numpy(), atol=PROB_TOLERANCE, rtol=0)
    np.testing.assert_allclose(
        got["expected_entropy"], want.expected_entropy.numpy(), atol=ENTROPY_TOLERANCE, rtol=0
    )
    entropy = bernoulli_entropy if variant == "het_sigmoid" else categorical_entropy
    np.testing.assert_allclose(
        got["predictive_entropy"], entropy(want.probs).numpy(), atol=ENTROPY_TOLERANCE, rtol=0
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_latent_probs_are_the_link_of_the_latent_mean_over_tau(exported, images, variant):
    """The optional ``latent_probs`` is link(mu / tau) of an independent PyTorch forward:
    softmax for the softmax heads, sigmoid per class for the sigmoid head; a deterministic
    head's equal its probabilities."""
    _, reports = exported
    model = trained_one_step(variant)
    with torch.no_grad():
        out = model(torch.from_numpy(images))
    scaled = out.latent.mean / out.temperature
    want = torch.sigmoid(scaled) if variant == "het_sigmoid" else torch.softmax(scaled, -1)
    got = OnnxRunner(reports[variant].onnx_path).run(images)
    np.testing.assert_allclose(got["latent_probs"], want.numpy(), atol=PROB_TOLERANCE, rtol=0)
    if variant == "det":
        np.testing.assert_allclose(got["latent_probs"], got["probs"], atol=PROB_TOLERANCE)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_image_gives_bit_identical_outputs_across_batches_and_sessions(
    exported, images, variant
):
    _, reports = exported
    path = reports[variant].onnx_path
    full = OnnxRunner(path).run(images)
    other = OnnxRunner(path, intra_op_threads=2)
    for start, stop in [(0, 1), (5, 12), (3, 64)]:
        part = other.run(images[start:stop])
        for name, value in part.items():
            assert np.array_equal(full[name][start:stop], value), (name, start, stop)
    order = np.random.default_rng(1).permutation(len(images))
    shuffled = other.run(images[order])
    for name, value in shuffled.items():
        assert np.array_equal(full[name][order], value), (name, "shuffled")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_uncertainty_outputs_are_consistent(exported, images, variant):
    _, reports = exported
    out = OnnxRunner(reports[variant].onnx_path).run(images)
    corr = out["topk_correlation"]
    np.testing.assert_allclose(corr, np.swapaxes(corr, 1, 2), atol=1e-6)
    np.testing.assert_array_equal(np.diagonal(corr, axis1=1, axis2=2), 1.0)
    assert np.all(np.abs(corr) <= 1 + 1e-6)
    assert np.all(out["confusable_ids"] != out["topk_ids"][:, :, None]), (
        "a class is not its own confusable"
    )
    assert np.all(np.diff(out["topk_probs"], axis=1) <= 0)
    np.testing.assert_array_equal(
        np.take_along_axis(out["probs"], out["topk_ids"], 1), out["topk_probs"]
    )
    np.testing.assert_allclose(
        out["mutual_information"],
        np.maximum(out["predictive_entropy"] - out["expected_entropy"], 0),
        atol=1e-6,
    )
    if variant == "det":
        np.testing.assert_array_equal(corr, np.broadcast_to(np.eye(TOP_K), corr.shape))
        np.testing.assert_array_equal(out["mutual_information"], 0.0)
        np.testing.assert_array_equal(out["expected_entropy"], out["predictive_entropy"])
    if variant != "het_sigmoid":
        np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "fill", "message"),
    [
        ((2, 3, 28, 28), 0.0, r"must be \[B, 1, 28, 28\]"),
        ((1, 28, 28), 0.0, r"must be \[B, 1, 28, 28\]"),
        ((2, 1, 28, 28), np.nan, "NaN or infinite"),
        ((2, 1, 28, 28), np.inf, "NaN or infinite"),
    ],
)
def test_runner_rejects_bad_images_with_a_clear_error(exported, shape, fill, message):
    _, reports = exported
    with pytest.raises(InputError, match=message):
        OnnxRunner(reports["het"].onnx_path).run(np.full(shape, fill, dtype=np.float32))


def test_export_from_a_checkpoint_keeps_its_metrics(tmp_path):
    model = trained_one_step("het")
    checkpoint = save_checkpoint(tmp_path / "het.pt", model, metrics={"val_nll": 0.7})
    report = export_to_repository(
        checkpoint,
        tmp_path / "repo",
        "from_ckpt",
        top_k=2,
        num_confusable=1,
        metrics={"test_top1": 0.9},
    )
    assert report.card.metrics == {"val_nll": 0.7, "test_top1": 0.9}


class StatefulBackbone(torch.nn.Module):
    """Changes with every call: tracing freezes one call, so ONNX disagrees with PyTorch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        return images.flatten(1) * self.calls


def test_failed_parity_raises_export_error_and_writes_nothing(tmp_path):
    from hetexport.layers import HetSoftmaxHead

    model = HetClassifier(
        StatefulBackbone(),
        HetSoftmaxHead(28 * 28, K, num_factors=2, eval_mc_samples=8),
        spec=spec_for("het"),
    )
    with pytest.raises(ExportError, match="ONNX Runtime disagrees with PyTorch"):
        export_to_repository(model, tmp_path / "repo", "broken", top_k=2, num_confusable=1)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.mark.parametrize(("top_k", "num_confusable"), [(0, 1), (K + 1, 1), (2, K), (2, 0)])
def test_impossible_top_k_or_confusable_counts_are_export_errors(tmp_path, top_k, num_confusable):
    with pytest.raises(ExportError, match="top_k|num_confusable"):
        export_to_repository(
            trained_one_step("het"), tmp_path, "bad", top_k=top_k, num_confusable=num_confusable
        )
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_graph_is_batched_and_free_of_kernels_that_round_by_position(exported, variant):
    """One batched graph (no per-example Scan), without the ONNX Runtime kernels whose results
    depend on an element's place in the batch (element-wise Log/Softplus/Sigmoid: vector
    body vs scalar tail; Exp is MLAS's, the same masked vector code on the tail) or on the
    batch's shape (ReduceMean/ReduceSum)."""
    _, reports = exported
    ops = {node.op_type for node in _nodes_fed_by_the_images(reports[variant].onnx_path)}
    assert "MatMul" in ops and ops & {"Softmax", "LogSoftmax"}
    assert not ops & {"Scan", "Loop", "Log", "Softplus", "Sigmoid", "ReduceMean",
                      "ReduceSum"}, ops


def _nodes_fed_by_the_images(path: Path) -> list[onnx.NodeProto]:
    """The nodes downstream of the ``images`` input (a learned temperature's sigmoid of a
    constant is computed the same way for every batch)."""
    graph = onnx.load(str(path)).graph
    reached = {graph.input[0].name}
    nodes = []
    for node in graph.node:  # topologically sorted
        if reached & set(node.input):
            nodes.append(node)
            reached.update(node.output)
    return nodes


def test_demo_sized_model_exports_well_under_5_mb(tmp_path):
    spec = ModelSpec(num_classes=10, head="het", num_factors=6, eval_mc_samples=1000)
    report = export_to_repository(build_model(spec), tmp_path, "demo", top_k=5, num_confusable=3)
    assert report.onnx_bytes < 5 * 2**20


def test_re_export_replaces_the_previous_model_directory(tmp_path):
    first = export_to_repository(
        trained_one_step("det"), tmp_path, "same", top_k=2, num_confusable=1
    )
    (first.model_dir / "stale.txt").write_text("old")
    second = export_to_repository(
        trained_one_step("det"), tmp_path, "same", top_k=3, num_confusable=1
    )
    assert not (second.model_dir / "stale.txt").exists() and second.card.top_k == 3
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["same"]


SOFTMAX_VARIANTS = ("het", "het_diag", "het_pe", "het_xl")


def numpy_latent_covariance(model: HetClassifier, images: np.ndarray) -> np.ndarray:
    """Sigma [B, K, K] from the head's latent parameters, formed in full with numpy:
    ``V V^T + diag(d^2)`` (V = diag(v) J for het_pe), HET-XL ``+ W diag(d'^2) W^T``."""
    with torch.no_grad():
        latent = model.head.latent(model.backbone(torch.from_numpy(images)))
    batch, classes = latent.mean.shape
    if latent.factors is not None:
        V = latent.factors.double().numpy()
    elif latent.shared_factors is not None:
        J = latent.shared_factors.detach().double().numpy()
        V = latent.factor_scale.double().numpy()[:, :, None] * J
    else:
        V = np.zeros((batch, classes, 0))
    sigma = V @ np.swapaxes(V, 1, 2)
    if latent.prelogit_scale is not None:
        W = latent.prelogit_weight.detach().double().numpy()
        d2 = latent.prelogit_scale.double().numpy() ** 2
        return sigma + np.einsum("kd,bd,ld->bkl", W, d2, W)
    return sigma + np.stack([np.diag(row) for row in latent.scale.double().numpy() ** 2])


def numpy_correlation_for(variant: str, sigma: np.ndarray) -> np.ndarray:
    """The contract's correlation: of C Sigma C (C = I - 1 1^T / K) for softmax heads, of
    Sigma for the sigmoid head; 1 on the diagonal, 0 where a variance is 0."""
    if variant != "het_sigmoid":
        centring = np.eye(K) - np.ones((K, K)) / K
        sigma = centring @ sigma @ centring
    std = np.sqrt(np.clip(np.diagonal(sigma, axis1=1, axis2=2), 0, None))
    denom = std[:, :, None] * std[:, None, :]
    corr = np.divide(sigma, denom, out=np.zeros_like(sigma), where=denom > 1e-12)
    corr[:, np.arange(K), np.arange(K)] = 1.0
    return corr


def numpy_sample_probs(model: HetClassifier, images: np.ndarray, onnx_path: Path,
                       link: str) -> np.ndarray:
    """``link(u_s / tau)`` [B, S, K] with numpy, from the head's latent parameters and the bank
    baked into the ONNX file: ``u_s = mu + V z_R[s] + d * z_K[s]`` (HET-XL: ``(d' * z_D[s])
    W^T`` for the diagonal term)."""
    bank = {t.name: numpy_helper.to_array(t).astype(np.float64)
            for t in onnx.load(str(onnx_path)).graph.initializer
            if t.name in ("noise_factors", "noise_diag")}
    with torch.no_grad():
        latent = model.head.latent(model.backbone(torch.from_numpy(images)))
        tau = float(model.head.temperature())
    mean = latent.mean.double().numpy()
    u = np.repeat(mean[:, None, :], bank["noise_diag"].shape[0], axis=1)
    if latent.factors is not None:
        u = u + np.einsum("sr,bkr->bsk", bank["noise_factors"], latent.factors.double().numpy())
    elif latent.shared_factors is not None:
        J = latent.shared_factors.detach().double().numpy()
        u = u + latent.factor_scale.double().numpy()[:, None, :] * (bank["noise_factors"] @ J.T)
    if latent.prelogit_scale is not None:
        scaled = latent.prelogit_scale.double().numpy()[:, None, :] * bank["noise_diag"]
        u = u + scaled @ latent.prelogit_weight.detach().double().numpy().T
    else:
        u = u + latent.scale.double().numpy()[:, None, :] * bank["noise_diag"]
    x = u / tau
    if link == "sigmoid":
        return 1 / (1 + np.exp(-x))
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_confusable_classes_are_where_the_sampled_probability_moves(exported, images, variant):
    """Softmax heads: per top class i, the m others with the largest share
    max(0, -C_ij) / sum_l max(0, -C_il) of its sampled probability's movement (C the sample
    covariance of the probabilities); sigmoid: the same with +C (co-moving labels);
    deterministic: shares 0 (no claim). Withheld (-1) where the relative standard error of
    Var(p_i) or half the largest difference between the shares over the bank's two halves is
    above its limit. Against numpy on the bank baked into the graph; the latent correlation
    among the top classes against numpy too."""
    _, reports = exported
    model = trained_one_step(variant)
    out = OnnxRunner(reports[variant].onnx_path).run(images)
    corr = numpy_correlation_for(variant, numpy_latent_covariance(model, images))
    top = out["topk_ids"]
    want_top = np.take_along_axis(np.take_along_axis(corr, top[:, :, None], 1),
                                  top[:, None, :], 2)
    np.testing.assert_allclose(out["topk_correlation"], want_top, atol=1e-5)
    if variant == "det":
        np.testing.assert_array_equal(out["confusable_share"], 0.0)
        return
    link = "sigmoid" if variant == "het_sigmoid" else "softmax"
    p = numpy_sample_probs(model, images, reports[variant].onnx_path, link)
    samples = p.shape[1]
    shares, moving, var = numpy_shares(p, top, link)
    np.testing.assert_allclose(shares.sum(-1)[moving], 1.0, atol=1e-9)
    # the bank is antithetic (row s + S/2 = -row s): a half is the first and third quarter
    first = (np.arange(samples) % (samples // 2)) < samples // 4
    half_shares = [numpy_shares(p[:, rows], top, link)[0] for rows in (first, ~first)]
    share_error = np.abs(half_shares[0] - half_shares[1]).max(-1) / 2
    centred = np.take_along_axis(p, top[:, None, :], 2) - np.take_along_axis(
        p.mean(1), top, 1)[:, None, :]  # the top columns' deviations [B, S, k]
    fourth = (centred**4).mean(1)
    variance_error = np.sqrt(np.clip(fourth / np.where(moving, var**2, 1) - 1, 0, None) / samples)
    withheld = moving & ((variance_error > MOVEMENT_RELATIVE_ERROR_MAX)
                         | (share_error > SHARE_STANDARD_ERROR_MAX))
    ranked = np.where(np.arange(K) == top[:, :, None], -np.inf, shares)  # never its own
    best = -np.sort(-ranked, axis=-1)[:, :, :M]
    np.testing.assert_allclose(out["confusable_share"],
                               np.where(withheld[..., None], WITHHELD_SHARE, best), atol=1e-4)
    np.testing.assert_allclose(  # the ids are those of the largest shares, withheld or not
        np.take_along_axis(ranked, out["confusable_ids"], 2), best, atol=1e-4)


def numpy_shares(p: np.ndarray, top: np.ndarray, link: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shares [B, k, K] of the top classes from sampled probabilities [B, S, K], whether each
    top class moves [B, k], and its Var(p_i) [B, k]."""
    centred = p - p.mean(1, keepdims=True)
    cov = np.einsum("bsk,bsl->bkl", centred, centred) / p.shape[1]  # [B, K, K]
    rows = np.take_along_axis(cov, top[:, :, None], 1)  # [B, k, K]
    var = np.take_along_axis(rows, top[:, :, None], 2)  # [B, k, 1]
    if link == "softmax":  # the others' covariances with i sum to -Var(p_i)
        np.testing.assert_allclose(rows.sum(-1, keepdims=True), 0.0, atol=1e-12)
    flows = np.clip(rows if link == "sigmoid" else -rows, 0, None)
    np.put_along_axis(flows, top[:, :, None], 0.0, 2)
    total = flows.sum(-1, keepdims=True)
    moving = (var > PROBABILITY_VARIANCE_FLOOR) & (total > 0)  # else: no claim, shares 0
    shares = np.where(moving, flows / np.where(moving, total, 1.0), 0.0)
    return shares, moving[..., 0], var[..., 0]
