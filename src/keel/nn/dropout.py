"""Dropout whose mask costs a quarter of the random draws of ``nn.Dropout``.

``torch.bernoulli_`` draws one random number per unit, and on a CPU that draw is most of dropout's
cost (3.2 ms of a 2,048 x 256 layer, a quarter of a balanced-preset training step). Here each int64
draw gives four 15-bit uniform lanes, compared with an integer threshold: the kept share is within
2^-16 of ``1 - p``. The fused step (keel.train.fused) and the autograd path draw masks this way.
"""

from __future__ import annotations

import torch
from torch import nn

LANE = 1 << 15  # the range of one lane's draw


def keep_threshold(p: float) -> int:
    """The lane value under which a unit is kept at dropout rate ``p`` (LANE when nothing drops)."""
    return max(1, round((1.0 - p) * LANE)) if p > 0 else LANE


def draws_for(n_units: int) -> int:
    """How many int64 draws a mask of ``n_units`` takes (four lanes each)."""
    return -(-n_units // 4)


def lane_mask(draws: torch.Tensor, mask: torch.Tensor, threshold: int) -> torch.Tensor:
    """Fill ``mask`` with 0 or ``LANE / threshold`` (the kept units' scale) from fresh ``draws``.

    torch's int64 draws are uniform on [0, 2^63), so the top lane's sign bit is always 0; keeping every
    lane's low 15 bits makes all four uniform on [0, 2^15).
    """
    lanes = draws.random_().view(torch.int16)[:mask.numel()].view(mask.shape)
    lanes.bitwise_and_(LANE - 1)
    torch.lt(lanes, threshold, out=mask)  # 1.0 where kept, in the mask's dtype
    return mask.mul_(LANE / threshold)


class LaneDropout(nn.Module):
    """``nn.Dropout`` (inverted: kept units scaled by 1 / keep; the identity in eval mode and in exports)
    with masks drawn four lanes to a random number."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = keep_threshold(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == LANE:
            return x
        draws = torch.empty(draws_for(x.numel()), dtype=torch.int64, device=x.device)
        mask = lane_mask(draws, torch.empty(x.shape, dtype=x.dtype, device=x.device), self.threshold)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
