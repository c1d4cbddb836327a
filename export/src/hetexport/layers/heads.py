"""HET output heads (Collier et al., CVPR 2021) and a deterministic baseline, one interface.

A head maps pre-logits phi [B, D] to a latent Gaussian over the K logits and averages the
link function over S Monte Carlo samples of it::

    mu(x) = W_mu phi + b_mu                                   [B, K]
    d(x)  = softplus(W_d phi + b_d) + MIN_SCALE               [B, K]
    V(x)  = reshape(W_V phi + b_V, [K, R])                    [B, K, R]   (dense factors), or
    V(x)  = diag(v(x)) J,  v(x) = W_v phi + b_v, J in R^{KxR} (parameter-efficient)
    u_s   = mu(x) + V(x) z_R[s] + d(x) * z_K[s]               [B, S, K]
    p_bar = (1/S) sum_s link(u_s / tau)                       [B, K]

HET-XL (Collier et al., "Massively Scaling Heteroscedastic Classifiers", ICLR 2023) puts the
noise on the pre-logits instead (``HetXLHead``): ``phi_s = phi + V'(x) z_R[s] + d'(x) * z_D[s]``,
``u_s = W phi_s + b``, so its noise parameters do not grow with K.

Typical usage (a HET head on any backbone that yields pre-logits)::

    head = HetSoftmaxHead(512, 10, num_factors=6, temperature=1.5)
    out = head(backbone(images))            # HeadOutput
    loss = head.loss(out, labels)           # -log clip(p_bar[y], 1e-7, 1)
    loss.backward()

Parameter-efficient variant and TF's mean shift: edward2's TF parameter-efficient layer also
adds ``b * v(x)`` to the mean logits. Since v(x) is affine in phi, ``b * v(x)`` is itself an
affine function of phi, which ``W_mu phi + b_mu`` already represents; mirroring it would add
parameters that change nothing the model can express and would couple the mean to the noise
scale. We do not mirror it: the mean is ``W_mu phi + b_mu`` in every variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hetexport.layers import batch_invariant
from hetexport.layers.gaussian import LatentGaussian
from hetexport.layers.head_output import HeadOutput
from hetexport.layers.mc import MCAverage, mc_sigmoid, mc_softmax, softmax_average
from hetexport.layers.noise_bank import NoiseBank
from hetexport.layers.numerics import MIN_SCALE, PROB_EPS, TEMPERATURE_BOUNDS
from hetexport.layers.temperature import Temperature

DEFAULT_NUM_FACTORS = 6
DEFAULT_MC_SAMPLES = 1000
SHARED_FACTORS_INIT_STD = 0.1
"""J's initial entries are N(0, SHARED_FACTORS_INIT_STD^2)."""


def clipped_log(probs: Tensor) -> Tensor:
    """``log(clip(p, PROB_EPS, 1))``, the reference numerics for the loss."""
    return torch.log(torch.clamp(probs, PROB_EPS, 1.0))


class _Head(nn.Module):
    """What every head shares: sizes, temperature, sample counts and noise drawing."""

    kind: str = ""
    link: str = "softmax"
    returns_sample_probs: bool = True
    """Whether ``HeadOutput.sample_probs`` holds the samples (the served confusable shares are
    computed from them); False for a head that streams its samples (``hetexport.fused``)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_factors: int,
        temperature: float,
        learn_temperature: bool,
        temperature_bounds: tuple[float, float],
        train_mc_samples: int,
        eval_mc_samples: int,
        share_samples_across_batch: bool,
    ) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2:
            raise ValueError(
                f"need in_features >= 1 and num_classes >= 2, got {in_features}, {num_classes}"
            )
        if num_factors < 0:
            raise ValueError(f"num_factors must be >= 0, got {num_factors}")
        if train_mc_samples < 1 or eval_mc_samples < 1:
            raise ValueError("train_mc_samples and eval_mc_samples must be >= 1")
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_factors = num_factors
        self.train_mc_samples = train_mc_samples
        self.eval_mc_samples = eval_mc_samples
        self.share_samples_across_batch = share_samples_across_batch
        self.temperature = Temperature(
            temperature, learned=learn_temperature, bounds=temperature_bounds
        )

    @property
    def num_samples(self) -> int:
        """S for the current mode: ``train_mc_samples`` in training, else ``eval_mc_samples``."""
        return self.train_mc_samples if self.training else self.eval_mc_samples

    @property
    def diag_noise_dim(self) -> int:
        """Width of the diagonal noise z a sample needs: K (HET-XL: D, the pre-logit size)."""
        return self.num_classes

    def draw_noise(
        self, batch_size: int, *, like: Tensor, generator: torch.Generator | None = None
    ) -> NoiseBank:
        """Fresh noise for one forward pass, on ``like``'s device and dtype."""
        return NoiseBank.draw(
            self.num_samples,
            self.num_factors,
            self.diag_noise_dim,
            batch=None if self.share_samples_across_batch else batch_size,
            generator=generator,
            device=like.device,
            dtype=like.dtype,
        )

    def latent(self, phi: Tensor) -> LatentGaussian:
        raise NotImplementedError

    def loss(self, output: HeadOutput, targets: Tensor) -> Tensor:
        """``mean_b -log clip(p_bar[b, y_b], 1e-7, 1)`` for class ids targets [B].

        The deterministic head's p_bar is its softmax p; ``HetSigmoidHead`` overrides this.
        """
        return F.nll_loss(output.log_probs, targets)

    def _check_features(self, phi: Tensor) -> None:
        if phi.dim() != 2 or phi.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__} expects pre-logits [B, {self.in_features}], "
                f"got {tuple(phi.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, "
            f"num_factors={self.num_factors}, train_mc_samples={self.train_mc_samples}, "
            f"eval_mc_samples={self.eval_mc_samples}, "
            f"share_samples_across_batch={self.share_samples_across_batch}"
        )


class _SampledHead(_Head):
    """A head that averages its link over S samples of its latent: the shared ``forward``."""

    def forward(self, phi: Tensor, *, noise: NoiseBank | None = None) -> HeadOutput:
        """phi [B, D] -> HeadOutput; ``noise=None`` draws ``num_samples`` fresh samples."""
        latent = self.latent(phi)
        if noise is None:
            noise = self.draw_noise(phi.shape[0], like=latent.mean)
        tau = self.temperature()
        averaged = self._average(latent, noise, tau)
        return HeadOutput(
            probs=averaged.probs,
            log_probs=clipped_log(averaged.probs),
            expected_entropy=averaged.expected_entropy,
            predictive_entropy=averaged.predictive_entropy,
            latent=latent,
            temperature=tau,
            sample_probs=averaged.sample_probs,
        )

    def _average(self, latent: LatentGaussian, noise: NoiseBank, tau: Tensor) -> MCAverage:
        """The softmax MC average ``(1/S) sum_s softmax(u_s / tau)`` (sigmoid heads override)."""
        return mc_softmax(latent, noise, tau)


class _HetHead(_SampledHead):
    """Shared parameters of the HET heads: mu, d, and V (dense or parameter-efficient)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_factors: int = DEFAULT_NUM_FACTORS,
        temperature: float = 1.0,
        learn_temperature: bool = False,
        temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
        train_mc_samples: int = DEFAULT_MC_SAMPLES,
        eval_mc_samples: int = DEFAULT_MC_SAMPLES,
        share_samples_across_batch: bool = True,
        parameter_efficient: bool = False,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            num_factors=num_factors,
            temperature=temperature,
            learn_temperature=learn_temperature,
            temperature_bounds=temperature_bounds,
            train_mc_samples=train_mc_samples,
            eval_mc_samples=eval_mc_samples,
            share_samples_across_batch=share_samples_across_batch,
        )
        if parameter_efficient and num_factors == 0:
            raise ValueError("the parameter-efficient variant needs num_factors >= 1")
        self.parameter_efficient = parameter_efficient
        self.mean_layer = nn.Linear(in_features, num_classes)
        self.scale_layer = nn.Linear(in_features, num_classes)
        self.factor_layer: nn.Linear | None = None
        self.factor_scale_layer: nn.Linear | None = None
        self.shared_factors: nn.Parameter | None = None
        if parameter_efficient:
            self.factor_scale_layer = nn.Linear(in_features, num_classes)
            self.shared_factors = nn.Parameter(
                torch.randn(num_classes, num_factors) * SHARED_FACTORS_INIT_STD
            )
        elif num_factors > 0:
            self.factor_layer = nn.Linear(in_features, num_classes * num_factors)

    def latent(self, phi: Tensor) -> LatentGaussian:
        """phi [B, D] -> ``N(mu, V V^T + diag(d^2))`` with mu, d [B, K], V [B, K, R]."""
        self._check_features(phi)
        mean = self.mean_layer(phi)
        scale = batch_invariant.softplus(self.scale_layer(phi)) + MIN_SCALE
        if self.parameter_efficient:
            return LatentGaussian(
                mean,
                scale,
                factor_scale=self.factor_scale_layer(phi),
                shared_factors=self.shared_factors,
            )
        factors = None
        if self.factor_layer is not None:
            factors = self.factor_layer(phi).reshape(-1, self.num_classes, self.num_factors)
        return LatentGaussian(mean, scale, factors)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, parameter_efficient={self.parameter_efficient}"


class HetSoftmaxHead(_HetHead):
    """HET softmax head: ``p(y|x) = E[softmax(u / tau)]``, u ~ N(mu(x), V V^T + diag(d^2)).

    Args (keyword-only after the sizes): ``num_factors`` R (0 = diagonal only),
    ``temperature`` tau (``learn_temperature`` with ``temperature_bounds``), ``train_mc_samples``
    and ``eval_mc_samples`` S, ``share_samples_across_batch`` (one z for the whole batch, as the
    reference does), ``parameter_efficient`` (V = diag(v(x)) J for large K).
    """

    link = "softmax"

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "het_pe" if self.parameter_efficient else "het"


class HetSigmoidHead(_HetHead):
    """HET multi-label head: ``p_k(x) = E[sigmoid(u_k / tau)]``, same latent u as the softmax
    head; probabilities are K independent marginals (rows need not sum to 1).

    Its entropies are sums of K Bernoulli entropies (see ``hetexport.layers.entropy``).
    """

    link = "sigmoid"
    kind = "het_sigmoid"

    def _average(self, latent: LatentGaussian, noise: NoiseBank, tau: Tensor) -> MCAverage:
        return mc_sigmoid(latent, noise, tau)

    def loss(self, output: HeadOutput, targets: Tensor) -> Tensor:
        """Binary cross-entropy on ``logit(p_bar)``, averaged over classes and batch.

        targets: multi-hot [B, K] floats, or class ids [B] (turned into one-hot).
        p_bar is clipped to [1e-7, 1 - 1e-7] first.
        """
        if targets.dim() == 1:
            targets = F.one_hot(targets, self.num_classes).to(output.probs.dtype)
        probs = torch.clamp(output.probs, PROB_EPS, 1.0 - PROB_EPS)
        return F.binary_cross_entropy(probs, targets)


class HetXLHead(_SampledHead):
    """HET-XL softmax head (Collier et al., ICLR 2023): the noise is on the D-dim pre-logits.

    ::

        V'(x) = reshape(W_V' phi + b_V', [D, R])                  [B, D, R]
        d'(x) = softplus(W_d' phi + b_d') + MIN_SCALE             [B, D]
        phi_s = phi + V'(x) z_R[s] + d'(x) * z_D[s]               [B, S, D]
        u_s   = W phi_s + b                                       [B, S, K]
        p_bar = (1/S) sum_s softmax(u_s / tau)                    [B, K]

    so ``u ~ N(W phi + b, W (V' V'^T + diag(d'^2)) W^T)``: the classifier W is the mean layer
    and the noise layers hold D (D + 1) (R + 1) parameters whatever K is (a HET head's
    hold (D + 1) K (R + 1)). The latent is a ``LatentGaussian`` in its pre-logit form (dense
    factors ``V = W V'`` [B, K, R], diagonal term ``W diag(d'^2) W^T``), and the noise bank
    holds z_R [S, R] and z_D [S, D] (``diag_noise_dim`` is D), so the MC average, the ONNX
    export and the correlation rows are those of the other heads. The paper learns tau with
    bounds (0.05, 5.0); pass ``temperature_bounds`` to match it.

    Args are those of ``HetSoftmaxHead`` without ``parameter_efficient`` (HET-XL is already
    K-independent); ``num_factors`` R may be 0 (pre-logit diagonal only).
    """

    kind = "het_xl"
    link = "softmax"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_factors: int = DEFAULT_NUM_FACTORS,
        temperature: float = 1.0,
        learn_temperature: bool = False,
        temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
        train_mc_samples: int = DEFAULT_MC_SAMPLES,
        eval_mc_samples: int = DEFAULT_MC_SAMPLES,
        share_samples_across_batch: bool = True,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            num_factors=num_factors,
            temperature=temperature,
            learn_temperature=learn_temperature,
            temperature_bounds=temperature_bounds,
            train_mc_samples=train_mc_samples,
            eval_mc_samples=eval_mc_samples,
            share_samples_across_batch=share_samples_across_batch,
        )
        self.mean_layer = nn.Linear(in_features, num_classes)
        self.prelogit_scale_layer = nn.Linear(in_features, in_features)
        self.prelogit_factor_layer: nn.Linear | None = None
        if num_factors > 0:
            self.prelogit_factor_layer = nn.Linear(in_features, in_features * num_factors)

    @property
    def diag_noise_dim(self) -> int:
        """D: the diagonal noise z_D is drawn per pre-logit feature."""
        return self.in_features

    def latent(self, phi: Tensor) -> LatentGaussian:
        """phi [B, D] -> ``N(W phi + b, W (V' V'^T + diag(d'^2)) W^T)`` over the K logits."""
        self._check_features(phi)
        prelogit_factors = None
        if self.prelogit_factor_layer is not None:
            prelogit_factors = self.prelogit_factor_layer(phi).reshape(
                -1, self.in_features, self.num_factors
            )
        return LatentGaussian.with_prelogit_diagonal(
            self.mean_layer(phi),
            prelogit_scale=batch_invariant.softplus(self.prelogit_scale_layer(phi)) + MIN_SCALE,
            prelogit_weight=self.mean_layer.weight,
            prelogit_factors=prelogit_factors,
        )


class DeterministicHead(_Head):
    """Plain softmax baseline behind the HET interface: ``p = softmax((W phi + b) / tau)``.

    Its latent has no noise (``V = None``, ``d = 0``), so its correlation is the identity and
    its expected entropy equals its predictive entropy. ``noise`` is accepted and ignored.
    """

    kind = "det"
    link = "softmax"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        temperature: float = 1.0,
        learn_temperature: bool = False,
        temperature_bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    ) -> None:
        super().__init__(
            in_features,
            num_classes,
            num_factors=0,
            temperature=temperature,
            learn_temperature=learn_temperature,
            temperature_bounds=temperature_bounds,
            train_mc_samples=1,
            eval_mc_samples=1,
            share_samples_across_batch=True,
        )
        self.mean_layer = nn.Linear(in_features, num_classes)

    def latent(self, phi: Tensor) -> LatentGaussian:
        self._check_features(phi)
        mean = self.mean_layer(phi)
        return LatentGaussian(mean, torch.zeros_like(mean))

    def forward(self, phi: Tensor, *, noise: NoiseBank | None = None) -> HeadOutput:
        latent = self.latent(phi)
        tau = self.temperature()
        averaged = softmax_average((latent.mean / tau).unsqueeze(1))  # one "sample"
        return HeadOutput(
            probs=averaged.probs,
            log_probs=clipped_log(averaged.probs),
            expected_entropy=averaged.expected_entropy,
            predictive_entropy=averaged.predictive_entropy,
            latent=latent,
            temperature=tau,
            sample_probs=averaged.sample_probs,
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"
