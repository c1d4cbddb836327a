"""Numerical constants of the HET layers, shared by the heads, the ONNX export and the tests.

They follow the public reference implementation (edward2) of Collier et al., CVPR 2021.
"""

MIN_SCALE = 1e-3
"""Floor added to the diagonal scale: ``d(x) = softplus(W_d phi + b_d) + MIN_SCALE``."""

PROB_EPS = 1e-7
"""MC-averaged probabilities are clipped to ``[PROB_EPS, 1]`` before a log is taken."""

TEMPERATURE_BOUNDS = (0.3, 3.0)
"""Default (lower, upper) bounds of a learned temperature."""

VARIANCE_FLOOR = 1e-12
"""Smallest ``Sigma_ii * Sigma_jj`` divided by when a correlation is formed (0/0 guard)."""
