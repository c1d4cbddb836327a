"""Training with the memory-lean MC softmax: the same values and gradients as the materialised
layer (every input, the learned temperature included), without keeping [B, S, K] for backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hetexport.fused import MemoryLeanHetSoftmaxHead, mc_softmax_lean
from hetexport.layers import HetSoftmaxHead, LatentGaussian, NoiseBank, mc_softmax
from hetexport.model import HetClassifier, ModelSpec, build_model
from hetexport.onnx.export import export_onnx
from hetexport.onnx.runner import OnnxRunner

GRAD_ATOL = 1e-12  # fp64: the two paths differ only by summation order


def latent_inputs(factors: int, efficient: bool, batch: int = 3, classes: int = 11):
    gen = torch.Generator().manual_seed(1)

    def leaf(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return (t.abs() + shift if shift else t).requires_grad_()

    inputs = {"mean": leaf(batch, classes), "scale": leaf(batch, classes, shift=0.1)}
    if efficient:
        inputs |= {"factor_scale": leaf(batch, classes),
                   "shared_factors": leaf(classes, factors, scale=0.5)}
    elif factors:
        inputs["factors"] = leaf(batch, classes, factors, scale=0.5)
    return inputs


def gradients(average, inputs, noise, targets):
    tau = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    out = average(LatentGaussian(**inputs), noise, tau)
    nll = -torch.log(out.probs.gather(1, targets[:, None])).mean()
    loss = nll + 0.3 * out.expected_entropy.sum()
    leaves = [*inputs.values(), tau]
    return (out.probs, *torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize(("factors", "efficient"), [(0, False), (3, False), (3, True)])
@pytest.mark.parametrize("shared", [True, False])
def test_lean_gradients_equal_materialised_gradients(factors, efficient, shared):
    inputs = latent_inputs(factors, efficient)
    noise = NoiseBank.draw(40, factors, 11, batch=None if shared else 3, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 4, 10])

    def lean(latent, noise, tau):  # 7 samples per chunk: the backward really is chunked
        return mc_softmax_lean(latent, noise, tau, chunk_elements=3 * 11 * 7)

    expected = gradients(mc_softmax, inputs, noise, targets)
    actual = gradients(lean, inputs, noise, targets)
    for want, got in zip(expected, actual, strict=True):
        torch.testing.assert_close(got, want, atol=GRAD_ATOL, rtol=0)


def test_lean_head_trains_like_the_materialised_head():
    torch.manual_seed(0)
    options = dict(num_factors=4, temperature=1.5, learn_temperature=True, train_mc_samples=64)
    plain = HetSoftmaxHead(8, 12, **options)
    lean = MemoryLeanHetSoftmaxHead(8, 12, chunk_elements=5 * 12 * 16, **options)
    lean.load_state_dict(plain.state_dict())
    features, targets = torch.randn(5, 8), torch.randint(0, 12, (5,))
    noise = NoiseBank.fixed(64, 4, 12, seed=3)
    for head in (plain, lean):
        head.loss(head(features, noise=noise), targets).backward()
    for (name, want), got in zip(plain.named_parameters(), lean.parameters(), strict=True):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, atol=1e-6, rtol=1e-5, msg=name)


def largest_saved_for_backward(average, latent, noise) -> int:
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        average(latent, noise, torch.tensor(1.3, dtype=torch.float64))
    return max(sizes)


def test_lean_forward_keeps_no_sample_sized_tensor_for_backward():
    batch, classes, samples = 8, 300, 500
    latent = LatentGaussian(**latent_inputs(3, False, batch=batch, classes=classes))
    noise = NoiseBank.fixed(samples, 3, classes, seed=1).to(dtype=torch.float64)
    assert largest_saved_for_backward(mc_softmax, latent, noise) >= batch * samples * classes
    # the lean path keeps the inputs; the largest is the noise bank z_K [S, K] itself
    assert largest_saved_for_backward(mc_softmax_lean, latent, noise) == samples * classes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the fused forward")
def test_lean_gradients_with_the_fused_forward_on_cuda():
    inputs = {k: v.detach().float().cuda().requires_grad_()
              for k, v in latent_inputs(3, True, batch=4, classes=300).items()}
    noise = NoiseBank.fixed(500, 3, 300, seed=2).to("cuda")
    targets = torch.tensor([0, 4, 10, 299], device="cuda")

    def grads(average):
        tau = torch.tensor(1.3, device="cuda", requires_grad=True)
        out = average(LatentGaussian(**inputs), noise, tau)
        loss = -torch.log(out.probs.gather(1, targets[:, None])).mean()
        return (out.probs, *torch.autograd.grad(loss, [*inputs.values(), tau]))

    for want, got in zip(grads(mc_softmax), grads(mc_softmax_lean), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_a_streaming_head_exports_the_same_graph_as_its_materialised_twin():
    """The served graph samples the latent itself (hetexport.serving), so a head that never
    holds its samples exports as it is, with its twin's outputs bit for bit."""
    spec = ModelSpec(num_classes=6, head="het", num_factors=2, eval_mc_samples=16,
                     backbone_kwargs={"widths": (4, 8), "feature_dim": 16})
    plain = build_model(spec).eval()
    lean = HetClassifier(plain.backbone, MemoryLeanHetSoftmaxHead(16, 6, num_factors=2,
                                                                  eval_mc_samples=16), spec=spec)
    lean.head.load_state_dict(plain.head.state_dict())
    images = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    outputs = [OnnxRunner(export_onnx(model.eval(), input_shape=(1, 28, 28),
                                      mc_samples=16).onnx_model).run(images)
               for model in (lean, plain)]
    for name, value in outputs[0].items():
        assert np.array_equal(value, outputs[1][name]), name
