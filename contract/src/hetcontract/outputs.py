"""The tensors an exported HET graph takes and gives: the contract between export and gateway.

Shapes use symbols: ``B`` batch (dynamic), ``K`` classes, ``k_max`` top classes kept at export,
``m`` confusable classes per top class. A deterministic (plain softmax) head exports the same
names: its correlations are 0 off the diagonal and its expected entropy equals its predictive
entropy.

Class correlation and confusable classes are two different things:

* ``topk_correlation`` is the correlation of the LATENT logits ``u ~ N(mu, Sigma)`` among the
  top classes (the quantity Collier et al., CVPR 2021 study). For a SOFTMAX head (``het``,
  ``het_pe``, ``het_xl``) a common shift of all logits changes no prediction, so Sigma's
  all-ones component is never learned; it is the correlation of the centred covariance
  ``Sigma_c = C Sigma C``, ``C = I - 1 1^T / K``. The SIGMOID head (``het_sigmoid``) reports
  that of Sigma. A deterministic head: the identity.
* ``confusable_ids`` / ``confusable_share`` say where each top class's PROBABILITY moves under
  the learned noise, from the same samples ``p_s = link(u_s / tau)`` that give ``probs``. With
  ``C_ij = Cov_s(p_i, p_j)``: ``share_ij = max(0, -C_ij) / sum_{l != i} max(0, -C_il)`` for
  softmax heads, the part of class i's probability movement that class j takes (in [0, 1],
  summing to 1 over the others; when no class moves with i it is the slope of p_j on p_i:
  the noise lowering p_i by delta raises p_j by share_ij * delta on average);
  ``max(0, C_ij) / sum_{l != i} max(0, C_il)`` for the sigmoid head (how label i's co-movement
  splits over the labels that rise with it: co-occurring labels). The m others with the
  largest share, largest first. All shares are 0 where the noise does not move class i
  (``Var_s(p_i)`` below 1e-6, a standard deviation of 0.001; always for a deterministic
  head): no claim of confusion. Every share of class i is ``WITHHELD_SHARE`` (-1) where the
  samples cannot place its movement (its standard errors over the samples are too large; the
  ids are still the ranked ones): the answer says so instead of giving a number (models
  exported before this carry no -1; a reader that lists shares of at least 0.01 lists none).
  Until contract version 2 this output was ``confusable_correlation``, the most negative
  centred latent correlation, which per input named a class with any probability to gain far
  less often (see ``hetexport.class_correlation``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

INPUT_NAME = "images"
"""FP32 [B, C, H, W], already resized and normalised per the model card's ``input``."""

MODEL_CARD_FILENAME = "model_card.json"
WITHHELD_SHARE = -1.0
"""``confusable_share`` of every confusable class of a top class whose shares are withheld."""
"""The model card's file name, beside ``config.pbtxt``."""

MODEL_CARD_PARAMETER = "model_card"
"""The ``config.pbtxt`` parameter holding the model card as JSON, so Triton exposes it."""


class OutputName(StrEnum):
    """Names of the graph's outputs."""

    TOPK_IDS = "topk_ids"
    TOPK_PROBS = "topk_probs"
    PREDICTIVE_ENTROPY = "predictive_entropy"
    EXPECTED_ENTROPY = "expected_entropy"
    MUTUAL_INFORMATION = "mutual_information"
    TOPK_CORRELATION = "topk_correlation"
    CONFUSABLE_IDS = "confusable_ids"
    CONFUSABLE_SHARE = "confusable_share"
    PROBS = "probs"
    LATENT_PROBS = "latent_probs"


class TensorSpec(NamedTuple):
    """One output: its name, Triton data type, numpy dtype and symbolic shape (batch first)."""

    name: OutputName
    triton_dtype: str
    numpy_dtype: str
    shape: tuple[str, ...]
    meaning: str


HEAD_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(OutputName.TOPK_IDS, "TYPE_INT64", "int64", ("B", "k_max"),
               "top classes by MC-averaged probability"),
    TensorSpec(OutputName.TOPK_PROBS, "TYPE_FP32", "float32", ("B", "k_max"),
               "their probabilities"),
    TensorSpec(OutputName.PREDICTIVE_ENTROPY, "TYPE_FP32", "float32", ("B",),
               "H[p_bar] in nats"),
    TensorSpec(OutputName.EXPECTED_ENTROPY, "TYPE_FP32", "float32", ("B",),
               "mean over samples of H[softmax(u_s / tau)]"),
    TensorSpec(OutputName.MUTUAL_INFORMATION, "TYPE_FP32", "float32", ("B",),
               "predictive minus expected entropy"),
    TensorSpec(OutputName.TOPK_CORRELATION, "TYPE_FP32", "float32", ("B", "k_max", "k_max"),
               "latent correlation among the top classes: of the centred covariance C Sigma C "
               "(softmax heads) or of Sigma (sigmoid head); see the module doc"),
    TensorSpec(OutputName.CONFUSABLE_IDS, "TYPE_INT64", "int64", ("B", "k_max", "m"),
               "per top class, the m other classes with the largest share of its probability "
               "movement under the learned noise (sigmoid head: of its co-movement)"),
    TensorSpec(OutputName.CONFUSABLE_SHARE, "TYPE_FP32", "float32", ("B", "k_max", "m"),
               "those shares of class i's probability movement, in [0, 1]: "
               "max(0, -C_ij) / sum_l max(0, -C_il) with C = Cov_s(p) (softmax heads; +C for "
               "the sigmoid head); 0 where the noise does not move class i; -1 (all m) where "
               "its shares are withheld, their standard errors too large"),
    TensorSpec(OutputName.PROBS, "TYPE_FP32", "float32", ("B", "K"),
               "the full MC-averaged probabilities"),
)


OPTIONAL_HEAD_OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec(OutputName.LATENT_PROBS, "TYPE_FP32", "float32", ("B", "K"),
               "the noise-free class distribution link(mu / tau) of the latent mean (softmax "
               "heads: softmax(mu / tau); sigmoid head: sigmoid(mu / tau); deterministic head: "
               "its probabilities)"),
)
"""Outputs an exported ONNX graph may have beyond ``HEAD_OUTPUTS``. A model without them is
served as before; the gateway asks Triton for one only when a request includes it
(``PredictRequest.include``), so the default answer and its cost do not change.

``latent_probs`` is what the model believes with its learned label noise taken out: p_bar
averages ``link(u_s / tau)`` over ``u ~ N(mu, Sigma)``, and Sigma is where a HET model puts
the label noise it was trained on, so ``link(mu / tau)`` is the class distribution of the
noise-free part (the label audit's clean-class posterior, ``hetcontract.audit_scoring``)."""


def output_spec(name: OutputName | str) -> TensorSpec:
    """The spec of one output (required or optional), by name."""
    for spec in (*HEAD_OUTPUTS, *OPTIONAL_HEAD_OUTPUTS):
        if spec.name == name:
            return spec
    raise KeyError(f"no head output named {name!r}")
