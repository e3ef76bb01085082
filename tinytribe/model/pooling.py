"""Stage 5: gated modality pooling -- per step, a learned weighting of the modality tokens."""

from __future__ import annotations

import torch
from torch import nn


class GatedModalityPool(nn.Module):
    """Pool (B, T, M, D) tokens to (B, T, D) with gates that depend on the content.

    context = mean of the *available* modality tokens; gates = sigmoid(Linear(D, M)(context)), set to
    zero for unavailable modalities and normalised to sum 1; output = sum_m gate_m * token_m. Visual
    cortex can learn to weight video, language areas text; a missing modality's weight goes to the
    others. Gates start at 1/M each (zero-initialised linear layer).
    """

    def __init__(self, d_model: int, n_modalities: int):
        super().__init__()
        self.gate = nn.Linear(d_model, n_modalities)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, tokens: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: tokens (B, T, M, D); available (B, M) or per step (B, T, M) bool. Returns (B, T, D) and
        gates (B, T, M). A step where no modality counts pools to zeros with zero gates."""
        avail = available[:, None, :] if available.ndim == 2 else available  # (B, 1|T, M)
        a = avail[..., None]  # (B, 1|T, M, 1)
        context = torch.where(a, tokens, 0.0).sum(dim=2) / a.to(tokens.dtype).sum(dim=2).clamp_min(1.0)  # (B, T, D)
        gates = torch.sigmoid(self.gate(context)) * avail.to(tokens.dtype)  # (B, T, M)
        gates = gates / gates.sum(dim=-1, keepdim=True).clamp_min(1e-6)
        # where() instead of a product: a masked token holding inf or NaN must not leak (0 * inf = nan)
        pooled = torch.where(a, tokens * gates[..., None], 0.0).sum(dim=2)  # (B, T, D)
        return pooled, gates
