"""Multi-head self-attention with an optional learned temporal decay bias (layers 1-2).

Layers 1-2 add ``-alpha * |t_i - t_j|`` to the attention logits, where ``t`` is a token's time in
seconds (token ``i`` belongs to feature step ``i // n_modalities``) and ``alpha > 0`` is a learned
rate per layer, kept positive by a softplus. It starts at ``1 / decay_scale_s`` (6 s): logits fall by
one unit per 6 s of separation. (The design's ``alpha = log(1/6) / TR`` is negative -- it would favour
*distant* tokens -- and mixes the 1.49 s TR with the 2 Hz feature grid.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def step_distance_s(n_steps: int, n_modalities: int, rate_hz: float, device=None) -> torch.Tensor:
    """|t_i - t_j| in seconds between interleaved tokens: (L, L) with L = n_steps * n_modalities."""
    step = torch.arange(n_steps * n_modalities, device=device) // n_modalities
    return (step[:, None] - step[None, :]).abs().float() / rate_hz


def causal_allowed(n_steps: int, n_modalities: int, device=None) -> torch.Tensor:
    """(L, L) bool: token i may attend to token j when j's step is not after i's step."""
    step = torch.arange(n_steps * n_modalities, device=device) // n_modalities
    return step[None, :] <= step[:, None]


class Attention(nn.Module):
    """Pre-projected multi-head attention through ``F.scaled_dot_product_attention``.

    Args:
        d_model: token width.
        n_heads: heads (d_model / n_heads per head).
        local: add the learned temporal decay bias.
        decay_scale_s: initial decay length in seconds (alpha = 1 / decay_scale_s).
        dropout: dropout on the output. (Dropout on the attention weights is left out: on the CPU it
            forces PyTorch's slow attention path and costs more than the rest of a training step.)
    """

    def __init__(self, d_model: int, n_heads: int, *, local: bool = False, decay_scale_s: float = 6.0,
                 dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.local = local
        if local:
            alpha0 = 1.0 / decay_scale_s
            self.decay_raw = nn.Parameter(torch.tensor(math.log(math.expm1(alpha0))))  # softplus^-1

    @property
    def alpha(self) -> torch.Tensor:
        """Decay rate per second (> 0)."""
        return F.softplus(self.decay_raw)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                dist_s: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            x: (B, L, D) tokens.
            mask_bias: (B, 1, L, L) or (1, 1, L, L) additive bias, -inf where attention is not allowed
                (masked tokens, the future in causal mode), 0 elsewhere; or that bias and (B, L, 1) bool,
                which queries have any allowed key (the others attend to nothing: output 0).
            dist_s: (L, L) token time distances in seconds.

        Returns:
            (B, L, D)
        """
        mask_bias, has_key = mask_bias if isinstance(mask_bias, tuple) else (mask_bias, None)
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, H, L, Dh)
        bias = mask_bias - self.alpha * dist_s if self.local else mask_bias  # (B|1, 1, L, L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        y = self.out(y)
        if has_key is not None:
            y = torch.where(has_key, y, torch.zeros((), dtype=y.dtype, device=y.device))
        return F.dropout(y, self.dropout, self.training)
