"""The temperature tau that divides every latent logit sample before the link function.

Fixed, or learned within bounds: ``tau = lo + (hi - lo) * sigmoid(t)`` (edward2's
parametrisation; Collier et al., CVPR 2021, tune tau as a hyperparameter).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hetexport.layers.numerics import TEMPERATURE_BOUNDS


def bounded_temperature(raw: Tensor, lower: float, upper: float) -> Tensor:
    """``lo + (hi - lo) * sigmoid(raw)``: any real maps into (lo, hi)."""
    return lower + (upper - lower) * torch.sigmoid(raw)


class Temperature(nn.Module):
    """tau as a module: ``Temperature(1.5)`` is fixed; ``Temperature(1.5, learned=True)`` learns
    ``t`` with ``tau = lo + (hi - lo) * sigmoid(t)``, t initialised so that tau starts at 1.5.

    ``forward()`` returns tau as a 0-dim tensor.
    """

    def __init__(
        self,
        value: float = 1.0,
        *,
        learned: bool = False,
        bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    ) -> None:
        super().__init__()
        lower, upper = (float(b) for b in bounds)
        if value <= 0:
            raise ValueError(f"temperature must be positive, got {value}")
        self.learned = learned
        self.lower, self.upper = lower, upper
        if learned:
            if not 0 < lower < value < upper:
                raise ValueError(
                    f"a learned temperature needs 0 < lower < value < upper, "
                    f"got {lower} < {value} < {upper}"
                )
            fraction = (value - lower) / (upper - lower)
            self.raw = nn.Parameter(torch.tensor(math.log(fraction / (1.0 - fraction))))
        else:
            self.register_buffer("value", torch.tensor(float(value)), persistent=True)

    def forward(self) -> Tensor:
        if self.learned:
            return bounded_temperature(self.raw, self.lower, self.upper)
        return self.value

    def extra_repr(self) -> str:
        if self.learned:
            return f"learned, bounds=({self.lower}, {self.upper}), now={float(self().detach()):.4g}"
        return f"fixed={float(self.value):.4g}"
