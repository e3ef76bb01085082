"""Mixture-of-experts feed-forward: a router picks ``top_k`` of ``n_experts`` GELU MLPs per token.

Tokens are grouped by expert (a loop over the few experts, never over tokens). Two auxiliary terms
keep routing healthy: the Switch Transformer load-balance term ``n_experts * sum_e f_e * P_e`` (``f_e``:
share of routing slots sent to expert e, ``P_e``: mean router probability of e; 1.0 when balanced)
and the ST-MoE router z-loss ``mean(logsumexp(logits)^2)``, which keeps router logits small (taken on
the raw logits: the router temperature softens routing, not the penalty).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MoE(nn.Module):
    """Top-k routed experts ``d_model -> d_hidden -> d_model``.

    Experts start from one shared random FFN plus N(0, init_noise) noise each: a common starting
    point, with the symmetry broken.

    Args:
        d_model: token width.
        d_hidden: expert hidden width.
        n_experts: number of experts.
        top_k: experts per token; their router probabilities are renormalised to sum to 1.
        init_noise: std of the per-expert noise.
    """

    def __init__(self, d_model: int, d_hidden: int, n_experts: int, top_k: int, init_noise: float = 0.01):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        shared1, shared2 = nn.Linear(d_model, d_hidden), nn.Linear(d_hidden, d_model)
        self.w1 = nn.Parameter(shared1.weight.detach().T.repeat(n_experts, 1, 1)
                               + init_noise * torch.randn(n_experts, d_model, d_hidden))  # (E, D, H)
        self.b1 = nn.Parameter(shared1.bias.detach().repeat(n_experts, 1))  # (E, H)
        self.w2 = nn.Parameter(shared2.weight.detach().T.repeat(n_experts, 1, 1)
                               + init_noise * torch.randn(n_experts, d_hidden, d_model))  # (E, H, D)
        self.b2 = nn.Parameter(shared2.bias.detach().repeat(n_experts, 1))  # (E, D)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None, temperature: float = 1.0,
                query_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Route and mix.

        Args:
            x: (B, L, D) tokens.
            token_mask: (B, L) bool, tokens to route; the rest get a zero output and do not count in
                the auxiliary terms (unavailable modalities).
            temperature: router softmax temperature (> 1: softer routing, e.g. early in training).
            query_mask: (B, L) bool, more tokens to route that do not count in the auxiliary terms
                either (Phase 1's masked modalities: queries whose outputs are read, never keys).

        Returns:
            (B, L, D) output, and ``{"load_balance", "z_loss", "expert_share"}`` (share: (E,)), the
            auxiliary terms and the share over ``token_mask``'s tokens only.
        """
        B, L, D = x.shape
        flat = x.reshape(B * L, D)  # (N, D)
        routed = token_mask if query_mask is None else (query_mask if token_mask is None else token_mask | query_mask)
        idx = torch.arange(B * L, device=x.device) if routed is None else routed.reshape(-1).nonzero()[:, 0]
        counted = (torch.ones_like(idx, dtype=torch.bool) if token_mask is None
                   else token_mask.reshape(-1)[idx])   # (n,) routed tokens that count in the statistics
        xs = flat[idx]  # (n, D) routed tokens
        logits = self.router(xs)  # (n, E)
        probs = (logits / temperature).softmax(dim=-1)
        top_p, top_e = probs.topk(self.top_k, dim=-1)  # (n, k)
        gate = top_p / top_p.sum(dim=-1, keepdim=True)

        flat_e = top_e.reshape(-1)  # (n*k,)
        order = flat_e.argsort()
        counts = torch.bincount(flat_e, minlength=self.n_experts).tolist()
        token_of_slot = (torch.arange(flat_e.numel(), device=x.device) // self.top_k)[order]
        gate_of_slot = gate.reshape(-1)[order]
        out = torch.zeros_like(xs)
        start = 0
        for e, n in enumerate(counts):
            if n:
                t = token_of_slot[start:start + n]
                h = F.gelu(xs[t] @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]  # (n_e, D)
                out.index_add_(0, t, h * gate_of_slot[start:start + n, None])
            start += n
        y = torch.zeros_like(flat).index_copy(0, idx, out).reshape(B, L, D)

        if query_mask is not None:   # the statistics of the tokens that count
            top_e, probs, logits = top_e[counted], probs[counted], logits[counted]
            flat_e = top_e.reshape(-1)
        n = probs.shape[0]
        share = torch.bincount(flat_e, minlength=self.n_experts).float() / max(flat_e.numel(), 1)  # f_e
        load_balance = self.n_experts * (share * probs.mean(dim=0)).sum() if n else x.new_zeros(())
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean() if n else x.new_zeros(())
        return y, {"load_balance": load_balance, "z_loss": z_loss, "expert_share": share.detach()}
