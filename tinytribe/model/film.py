"""Stage 7 (space): the shared output MLP, per-subject FiLM, and the bias-free projection to outputs.

LayerNorm -> Linear + GELU -> FiLM (gamma * x + beta per subject) -> [time averaging] -> Linear(D, V, no bias).

Every subject has 2 * D numbers (1,024 at D = 512) instead of v2's 5M-parameter subject layer. The
*average subject*, for people never seen, uses the mean gamma and beta of the training subjects. New
subjects (``add_subjects``) get their own gamma and beta, starting from that mean, held apart from the
original ones so that adapting them can leave every other parameter frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

AVERAGE_SUBJECT = -1


class SubjectFiLM(nn.Module):
    """Per-subject scale and shift. Subject ids: 0 .. n_subjects - 1 for the original subjects, then
    the added ones; ``AVERAGE_SUBJECT`` (-1) for the average subject."""

    def __init__(self, d_model: int, n_subjects: int, n_new_subjects: int = 0):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(n_subjects, d_model))
        self.beta = nn.Parameter(torch.zeros(n_subjects, d_model))
        self.gamma_new = nn.Parameter(torch.ones(n_new_subjects, d_model))
        self.beta_new = nn.Parameter(torch.zeros(n_new_subjects, d_model))

    @property
    def n_subjects(self) -> int:
        return self.gamma.shape[0] + self.gamma_new.shape[0]

    def table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(S + 1, D) gamma and beta: every subject, then the average subject in the last row."""
        g = torch.cat([self.gamma, self.gamma_new, self.gamma.mean(0, keepdim=True)])
        b = torch.cat([self.beta, self.beta_new, self.beta.mean(0, keepdim=True)])
        return g, b

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D); subject (B,) long or None (average subject). Returns (B, T, D)."""
        g, b = self.table()
        S = self.n_subjects
        if subject is None:
            subject = torch.full((x.shape[0],), AVERAGE_SUBJECT, dtype=torch.long, device=x.device)
        if ((subject < AVERAGE_SUBJECT) | (subject >= S)).any():
            raise ValueError(f"subject ids must be in 0..{S - 1} or {AVERAGE_SUBJECT} (average), got {subject.tolist()}")
        row = torch.where(subject == AVERAGE_SUBJECT, S, subject)  # (B,)
        return g[row][:, None, :] * x + b[row][:, None, :]

    def add_subjects(self, n: int) -> list[nn.Parameter]:
        """Append ``n`` subjects initialised to the average subject; returns their (trainable) parameters.

        The original subjects' parameters are kept as they are (the same tensors, still frozen when
        they were), so an optimizer over the rest of the model stays valid. Subjects added earlier join
        the original ones first (new tensors: rebuild an optimizer that held them), so only the newest
        are held apart.
        """
        with torch.no_grad():
            g_avg, b_avg = self.gamma.mean(0, keepdim=True), self.beta.mean(0, keepdim=True)
            if self.gamma_new.shape[0]:  # earlier additions join the originals, frozen or not as those are
                frozen = not self.gamma.requires_grad
                self.gamma = nn.Parameter(torch.cat([self.gamma, self.gamma_new]), requires_grad=not frozen)
                self.beta = nn.Parameter(torch.cat([self.beta, self.beta_new]), requires_grad=not frozen)
            self.gamma_new = nn.Parameter(g_avg.repeat(n, 1))
            self.beta_new = nn.Parameter(b_avg.repeat(n, 1))
        return [self.gamma_new, self.beta_new]


class OutputHead(nn.Module):
    """Shared MLP + FiLM at the feature rate; time averaging and projection per target grid.

    Args:
        d_model: token width.
        n_outputs: vertices or parcels of the output space.
        n_subjects: subjects with their own FiLM vectors.
    """

    def __init__(self, d_model: int, n_outputs: int, n_subjects: int, n_new_subjects: int = 0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mlp = nn.Linear(d_model, d_model)
        self.film = SubjectFiLM(d_model, n_subjects, n_new_subjects)
        self.proj = nn.Linear(d_model, n_outputs, bias=False)

    def condition(self, x: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D): MLP and the subject's FiLM, still at the feature rate."""
        return self.film(F.gelu(self.mlp(self.norm(x))), subject)

    def project(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Average to the grid, then project: h (B, T, D), weights (B, N, T) -> (B, N, V).

        Averaging first is exact (the projection is linear and has no bias) and cheaper by the
        number of steps per sample."""
        return self.proj(weights.to(h.dtype) @ h)  # (B, N, D) -> (B, N, V)
