"""Errors of the fused MC head."""


class FusedHeadError(Exception):
    """Base class of the fused head's errors."""


class FusedKernelUnavailable(FusedHeadError):
    """The triton kernel cannot run here (no triton, or no CUDA and no interpreter)."""


class UnsupportedHead(FusedHeadError):
    """The head or its inputs have a form the fused path does not cover."""


class EnsembleError(FusedHeadError):
    """The GPU ensemble cannot be written (model kind, reference model, sizes)."""
