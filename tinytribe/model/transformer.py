"""Stage 4: the fusion transformer -- pre-LN blocks of attention and MoE, with stochastic depth."""

from __future__ import annotations

import torch
from torch import nn

from tinytribe.model.attention import Attention, causal_allowed, step_distance_s
from tinytribe.model.moe import MoE


class Block(nn.Module):
    """x + Attn(LN(x)), then + MoE(LN(.)); the layer's whole update is dropped per sample with
    probability ``drop_prob`` in training (stochastic depth, rescaled by 1 / (1 - p)).

    The MoE's auxiliary terms are computed and returned whether or not the update is dropped
    (the design's fix of v2, which skipped them with the layer).
    """

    def __init__(self, *, attention: Attention, moe: MoE, d_model: int, drop_prob: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention, self.moe = attention, moe
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor, dist_s: torch.Tensor, token_mask: torch.Tensor,
                temperature: float = 1.0, query_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, L, D) -> (B, L, D), aux terms."""
        h = x + self.attention(self.ln1(x), mask_bias, dist_s)  # (B, L, D)
        m, aux = self.moe(self.ln2(h), token_mask, temperature, query_mask)  # (B, L, D)
        update = h + m - x
        if self.training and self.drop_prob >= 1:
            update = torch.zeros_like(update)
        elif self.training and self.drop_prob > 0:
            keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop_prob).to(x.dtype)
            update = update * keep / (1.0 - self.drop_prob)
        return x + update, aux


class FusionTransformer(nn.Module):
    """``n_layers`` blocks; the first ``local_layers`` add the temporal decay bias; final LayerNorm.

    Args:
        d_model, n_heads: token width and heads.
        n_layers, local_layers: depth, and how many leading layers are local.
        n_experts, top_k, expert_hidden, expert_init_noise: MoE settings.
        drop_path: stochastic depth of the last layer; layer l (1-based) of L uses l / L * drop_path.
        decay_scale_s, dropout: attention settings.
    """

    def __init__(self, *, d_model: int, n_heads: int, n_layers: int, local_layers: int, n_experts: int, top_k: int,
                 expert_hidden: int, expert_init_noise: float, drop_path: float, decay_scale_s: float, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(attention=Attention(d_model, n_heads, local=l < local_layers, decay_scale_s=decay_scale_s,
                                      dropout=dropout),
                  moe=MoE(d_model, expert_hidden, n_experts, top_k, expert_init_noise),
                  d_model=d_model, drop_prob=(l + 1) / n_layers * drop_path)
            for l in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor, *, n_modalities: int, rate_hz: float,
                causal: bool = False, temperature: float = 1.0, query_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fuse interleaved tokens.

        Args:
            x: (B, L, D) tokens, L = T * n_modalities, ordered t1 a1 v1 t2 ...
            token_mask: (B, L) bool, False for tokens of unavailable modalities: nothing attends to them.
            query_mask: (B, L) bool, tokens that are no key but whose outputs are read (Phase 1's masked
                modalities): they go through the experts too, outside the MoE statistics.
            causal: a token at step t attends to steps <= t only (next-step prediction).
            temperature: router temperature.

        Returns:
            (B, L, D), and aux terms summed over layers (``aux_loss`` = load_balance + 0.1 * z_loss).
        """
        B, L, _ = x.shape
        T = L // n_modalities
        allowed = token_mask[:, None, None, :]  # (B, 1, 1, L)
        if not causal and bool(token_mask.any(dim=1).all()):   # every query has a key: a broadcast bias will do
            mask_bias = torch.zeros(allowed.shape, device=x.device).masked_fill(~allowed, float("-inf"))
        else:
            if causal:
                allowed = allowed & causal_allowed(T, n_modalities, x.device)  # (B, 1, L, L)
            allowed = allowed.expand(B, 1, L, L)
            # a query with no key it may attend to (causal mode, padding at the start) attends to nothing:
            # its row gets a finite bias (no NaN, forward or backward) and its attention output is zeroed
            has_key = allowed.any(dim=-1, keepdim=True)  # (B, 1, L, 1)
            mask_bias = torch.zeros(allowed.shape, device=x.device).masked_fill(~allowed & has_key, float("-inf"))
            mask_bias = (mask_bias, has_key[:, 0])  # the bias, and (B, L, 1) which queries have a key
        dist_s = step_distance_s(T, n_modalities, rate_hz, x.device)  # (L, L)
        totals = {"load_balance": x.new_zeros(()), "z_loss": x.new_zeros(())}
        shares = []
        for block in self.blocks:
            x, aux = block(x, mask_bias, dist_s, token_mask, temperature, query_mask)
            totals["load_balance"] = totals["load_balance"] + aux["load_balance"]
            totals["z_loss"] = totals["z_loss"] + aux["z_loss"]
            shares.append(aux["expert_share"])
        totals["aux_loss"] = totals["load_balance"] + 0.1 * totals["z_loss"]
        totals["expert_share"] = torch.stack(shares)  # (n_layers, E)
        return self.ln_f(x), totals
