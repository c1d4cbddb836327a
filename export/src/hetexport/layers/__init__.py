"""Heteroscedastic (HET) output layers in PyTorch.

Collier, Mustafa, Kokiopoulou, Jenatton, Berent, "Correlated Input-Dependent Label Noise in
Large-Scale Image Classification", CVPR 2021 (arXiv 2105.10305):
``u = mu(x) + V(x) z_R + d(x) * z_K``, ``p(y|x) = E[softmax(u / tau)]``. HET-XL (Collier et
al., ICLR 2023; ``HetXLHead``) puts the noise on the pre-logits instead:
``u = W (phi + V'(x) z_R + d'(x) * z_D) + b``.

Typical usage::

    from hetexport.layers import HetSoftmaxHead
    head = HetSoftmaxHead(512, 10, num_factors=6, temperature=1.5)
    out = head(features)   # HeadOutput(probs, log_probs, expected_entropy, latent, temperature)
    head.loss(out, labels).backward()
"""

from hetexport.layers import batch_invariant
from hetexport.layers.entropy import bernoulli_entropy, categorical_entropy
from hetexport.layers.gaussian import LatentGaussian
from hetexport.layers.head_output import HeadOutput
from hetexport.layers.heads import DeterministicHead, HetSigmoidHead, HetSoftmaxHead, HetXLHead
from hetexport.layers.mc import MCAverage, mc_sigmoid, mc_softmax, sample_logits
from hetexport.layers.noise_bank import NoiseBank
from hetexport.layers.numerics import MIN_SCALE, PROB_EPS, TEMPERATURE_BOUNDS
from hetexport.layers.temperature import Temperature

__all__ = [
    "MIN_SCALE",
    "PROB_EPS",
    "TEMPERATURE_BOUNDS",
    "DeterministicHead",
    "HeadOutput",
    "HetSigmoidHead",
    "HetSoftmaxHead",
    "HetXLHead",
    "LatentGaussian",
    "MCAverage",
    "NoiseBank",
    "Temperature",
    "batch_invariant",
    "bernoulli_entropy",
    "categorical_entropy",
    "mc_sigmoid",
    "mc_softmax",
    "sample_logits",
]
