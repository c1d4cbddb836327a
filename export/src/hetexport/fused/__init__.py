"""The MC softmax head without the [B, S, K] sample tensor: a fused triton kernel, a chunked
PyTorch fallback, a memory-lean autograd path for training and the GPU Triton ensemble.

Typical usage::

    from hetexport.fused import mc_head, mc_softmax_lean
    out = mc_head(latent, noise, 1.5, top_k=5)          # McHeadResult: probs, entropies, top-k
    averaged = mc_softmax_lean(latent, noise, tau)      # MCAverage, training without [B, S, K]

See export/README.md, "Fused GPU head", for the design and the measured figures.
"""

from hetexport.fused.chunked import DEFAULT_CHUNK_ELEMENTS, chunked_sample_stats
from hetexport.fused.errors import (
    EnsembleError,
    FusedHeadError,
    FusedKernelUnavailable,
    UnsupportedHead,
)
from hetexport.fused.lean_head import MemoryLeanHetSoftmaxHead
from hetexport.fused.mc_head import McHeadResult, mc_head, sample_stats, triton_available
from hetexport.fused.memory_lean import mc_softmax_lean
from hetexport.fused.sample_stats import SampleStats

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "EnsembleError",
    "FusedHeadError",
    "FusedKernelUnavailable",
    "McHeadResult",
    "MemoryLeanHetSoftmaxHead",
    "SampleStats",
    "UnsupportedHead",
    "chunked_sample_stats",
    "mc_head",
    "mc_softmax_lean",
    "sample_stats",
    "triton_available",
]
