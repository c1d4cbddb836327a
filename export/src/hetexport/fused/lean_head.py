"""``HetSoftmaxHead`` trained with the memory-lean MC softmax (``mc_softmax_lean``).

Same parameters, options, outputs and gradients as ``hetexport.layers.HetSoftmaxHead``; only
the MC average differs: forward fused (CUDA) or chunked (CPU), backward recomputed per chunk
of samples, so autograd never holds [B, S, K]. State dicts are interchangeable: to export a
model trained with this head, load its state dict into a ``HetSoftmaxHead`` of the same
options (the served graph needs the samples this head never returns).

Typical usage::

    head = MemoryLeanHetSoftmaxHead(2048, 21843, num_factors=50, parameter_efficient=True,
                                    train_mc_samples=1000)
    head.load_state_dict(trained_het_head.state_dict())      # or train it from scratch
"""

from __future__ import annotations

from torch import Tensor

from hetexport.fused.chunked import DEFAULT_CHUNK_ELEMENTS
from hetexport.fused.memory_lean import mc_softmax_lean
from hetexport.layers import HetSoftmaxHead, LatentGaussian, MCAverage, NoiseBank


class MemoryLeanHetSoftmaxHead(HetSoftmaxHead):
    """A ``HetSoftmaxHead`` whose MC average keeps O(B S) instead of O(B S K) for backward.

    ``chunk_elements`` (keyword-only) bounds the floats of one recomputed [B, S_chunk, K] chunk.
    """

    returns_sample_probs = False

    def __init__(self, *args, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_elements = chunk_elements

    def _average(self, latent: LatentGaussian, noise: NoiseBank, tau: Tensor) -> MCAverage:
        return mc_softmax_lean(latent, noise, tau, chunk_elements=self.chunk_elements)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_elements={self.chunk_elements}"
