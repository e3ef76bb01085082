"""Stage 6: a learnable haemodynamic response -- a causal depthwise convolution, double-gamma init.

The BOLD signal at time t reflects the stimulus about 4-10 s earlier (peak near 5-6 s, an undershoot
near 15 s). Each channel gets its own causal kernel, initialised to the canonical double-gamma HRF
(gamma pdf of shape 6 minus gamma pdf of shape 16 divided by 6, scale 1 s), sampled at the rate the
convolution runs at. The design sampled it at TR = 1.49 s with 8 taps but ran the convolution on the
2 Hz stream, where 8 taps cover only 4 s -- before the peak. Here the kernel is sampled at the
feature rate with taps covering at least 16 s (33 taps at 2 Hz: 0, 0.5, ..., 16 s).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def double_gamma(t: torch.Tensor, peak_shape: float = 6.0, under_shape: float = 16.0,
                 under_ratio: float = 1.0 / 6.0) -> torch.Tensor:
    """Canonical double-gamma HRF at times ``t`` (seconds, scale 1 s); zero for t <= 0."""
    t = t.double()

    def pdf(a: float) -> torch.Tensor:
        safe = t.clamp_min(1e-12)
        return torch.where(t > 0, torch.exp((a - 1) * safe.log() - safe - math.lgamma(a)), 0.0)

    return pdf(peak_shape) - under_ratio * pdf(under_shape)


class HRFConv(nn.Module):
    """out = x + causal_depthwise_conv(x), kernel per channel, initialised to the HRF (sum 1).

    Causal: out[t] depends on x[t], x[t-1], ..., x[t - taps + 1] only.

    Args:
        d_model: channels.
        taps: kernel length in steps.
        rate_hz: rate of the stream (the kernel's sample spacing is 1 / rate_hz).
    """

    def __init__(self, d_model: int, taps: int, rate_hz: float):
        super().__init__()
        self.taps = taps
        h = double_gamma(torch.arange(taps) / rate_hz)
        h = (h / h.sum()).float()
        # conv1d is a cross-correlation: weight[k] multiplies x[t - (taps - 1) + k], so flip the kernel
        self.weight = nn.Parameter(h.flip(0).repeat(d_model, 1, 1))  # (D, 1, taps)
        self.bias = nn.Parameter(torch.zeros(d_model))

    def kernel(self) -> torch.Tensor:
        """(D, taps): channel kernels with tap j applied to x[t - j]."""
        return self.weight[:, 0].flip(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        xt = F.pad(x.transpose(1, 2), (self.taps - 1, 0))  # (B, D, T + taps - 1)
        return x + F.conv1d(xt, self.weight, self.bias, groups=x.shape[-1]).transpose(1, 2)
