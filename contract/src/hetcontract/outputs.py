"""The tensors an exported HET graph takes and gives: the contract between export and gateway.

Shapes use symbols: ``B`` batch (dynamic), ``K`` classes, ``k_max`` top classes kept at export,
``m`` confusable classes per top class. A deterministic (plain softmax) head exports the same
names: its correlations are 0 off the diagonal and its expected entropy equals its predictive
entropy.

Class correlation. The latent logits are ``u ~ N(mu, Sigma)``. For a SOFTMAX head (``het``,
``het_pe``, ``het_xl``) a common shift of all logits changes no prediction, so Sigma's all-ones
component is never learned; the correlation reported is that of the centred covariance
``Sigma_c = C Sigma C`` with ``C = I - 1 1^T / K`` (``corr_ij = Sigma_c_ij / sqrt(Sigma_c_ii
Sigma_c_jj)``), and a top class's confusable classes are the m others with the most NEGATIVE
centred correlation: when the noise raises that class's logit it lowers theirs, so probability
mass moves between them. The SIGMOID head (``het_sigmoid``, independent Bernoullis, no shift
invariance) reports the raw correlation of Sigma, and its confusable classes are the m others
with the most POSITIVE one (labels that co-occur). Values are reported as they are (negative
for a softmax head's confusable classes). A deterministic head: the identity, confusable
correlations 0 (its confusable ids are then the lowest other class ids, and carry no meaning).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

INPUT_NAME = "images"
"""FP32 [B, C, H, W], already resized and normalised per the model card's ``input``."""

MODEL_CARD_FILENAME = "model_card.json"
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
    CONFUSABLE_CORRELATION = "confusable_correlation"
    PROBS = "probs"


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
               "correlation among the top classes: of the centred latent covariance C Sigma C "
               "(softmax heads) or of Sigma (sigmoid head); see the module doc"),
    TensorSpec(OutputName.CONFUSABLE_IDS, "TYPE_INT64", "int64", ("B", "k_max", "m"),
               "per top class, the m other classes with the most negative centred correlation "
               "(softmax heads: where its probability goes) or the most positive raw "
               "correlation (sigmoid head: co-occurring labels)"),
    TensorSpec(OutputName.CONFUSABLE_CORRELATION, "TYPE_FP32", "float32", ("B", "k_max", "m"),
               "those correlations, as they are (negative for softmax heads)"),
    TensorSpec(OutputName.PROBS, "TYPE_FP32", "float32", ("B", "K"),
               "the full MC-averaged probabilities"),
)


def output_spec(name: OutputName | str) -> TensorSpec:
    """The spec of one output, by name."""
    for spec in HEAD_OUTPUTS:
        if spec.name == name:
            return spec
    raise KeyError(f"no head output named {name!r}")
