"""Stage 2: per-modality projectors, and the motion module on the video stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ModalityProjector(nn.Module):
    """LayerNorm(d_in) -> Linear -> GELU -> Dropout -> Linear -> GELU -> Dropout -> Linear -> LayerNorm.

    Args:
        d_in: backbone feature size.
        d_hidden: hidden width (768 in the design).
        d_model: output token width (512).
        dropout: dropout after each hidden layer.
    """

    def __init__(self, d_in: int, d_hidden: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_in),
            nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(d_hidden, d_hidden), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(d_hidden, d_model),
            nn.LayerNorm(d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_in) -> (B, T, d_model)."""
        return self.net(x)


class MotionModule(nn.Module):
    """Depthwise temporal convolution (kernel 3, one filter per channel) plus the input.

    Per-frame image features are blind to motion; a 3-tap filter per channel can learn frame[t] -
    frame[t-1]-like differences, for motion-sensitive cortex (MT+, V1). The kernel starts at zero,
    so the module starts as the identity.
    """

    def __init__(self, d_model: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). In causal mode the future tap is left out: step t sees t-1 and t."""
        xt = x.transpose(1, 2)  # (B, D, T)
        if causal:
            k = self.conv.kernel_size[0] // 2 + 1  # taps up to the centre
            y = F.conv1d(F.pad(xt, (k - 1, 0)), self.conv.weight[..., :k], self.conv.bias, groups=xt.shape[1])
        else:
            y = self.conv(xt)
        return x + y.transpose(1, 2)
