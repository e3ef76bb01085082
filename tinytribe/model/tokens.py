"""Stage 3: temporal and modality embeddings, length alignment, modality dropout, interleaving."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ModalityEmbeddings(nn.Module):
    """A learned temporal embedding table per modality plus a learned modality-type vector.

    Text at step 5 and video at step 5 live in different temporal contexts (discrete words,
    continuous sound, frames), so each modality has its own table (design stage 3).
    """

    def __init__(self, n_modalities: int, max_steps: int, d_model: int):
        super().__init__()
        self.time = nn.ModuleList(nn.Embedding(max_steps, d_model) for _ in range(n_modalities))
        self.kind = nn.Parameter(torch.zeros(n_modalities, d_model))
        for emb in self.time:
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.kind, std=0.02)
        self.max_steps = max_steps

    def forward(self, x: torch.Tensor, m: int) -> torch.Tensor:
        """Add modality ``m``'s embeddings to its tokens: (B, T, D) -> (B, T, D)."""
        T = x.shape[1]
        if T > self.max_steps:
            raise ValueError(f"window of {T} steps is longer than max_steps={self.max_steps}")
        return x + self.time[m].weight[:T] + self.kind[m]


def align_length(x: torch.Tensor, T: int) -> torch.Tensor:
    """Linearly interpolate (B, T_m, D) to (B, T, D) along time; identity when T_m == T."""
    if x.shape[1] == T:
        return x
    return F.interpolate(x.transpose(1, 2), size=T, mode="linear", align_corners=True).transpose(1, 2)


def align_mask(mask: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T_m) bool on (B, T): each step takes the nearest step of the mask's own grid (as
    :func:`align_length` places it, corners aligned); identity when T_m == T."""
    if mask.shape[1] == T:
        return mask
    src = torch.linspace(0, mask.shape[1] - 1, T, device=mask.device).round().long()
    return mask[:, src]


def modality_dropout(available: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Drop whole modalities of a sample with probability ``p`` each, never all available ones.

    Args:
        available: (B, M) bool, which modalities each sample has.
        p: drop probability per available modality.

    Returns:
        (B, M) bool, the modalities kept. A sample whose draw would drop every available modality
        keeps one of them, chosen at random.
    """
    if p <= 0:
        return available
    u = torch.rand(available.shape, generator=generator, device=available.device)
    keep = available & (u >= p)
    empty = ~keep.any(dim=1) & available.any(dim=1)
    if empty.any():
        # keep the available modality with the largest draw (a uniformly random one of them)
        score = torch.where(available, u, torch.full_like(u, -1.0))
        rescue = F.one_hot(score.argmax(dim=1), available.shape[1]).bool()
        keep = keep | (rescue & empty[:, None])
    return keep


def interleave(tokens: list[torch.Tensor]) -> torch.Tensor:
    """[(B, T, D)] * M -> (B, M*T, D) ordered t1 a1 v1 t2 a2 v2 ..."""
    return torch.stack(tokens, dim=2).flatten(1, 2)
