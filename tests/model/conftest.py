from __future__ import annotations

import pytest
import torch

from tinytribe.formats import MODALITIES
from tinytribe.model import ModelConfig, TimeGrid

TINY = dict(input_dims=[12, 10, 16], d_model=32, proj_hidden=24, n_layers=4, n_heads=4, local_layers=2,
            n_experts=4, top_k=2, expert_hidden=48, max_steps=64, space="custom:20", n_subjects=3,
            teacher_dim=24, dropout=0.0)


def tiny_config(**over) -> ModelConfig:
    return ModelConfig(**{**TINY, **over})


def make_batch(cfg: ModelConfig, B: int = 3, T: int = 24, seed: int = 0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [T] * 3
    feats = {m: torch.randn(B, t, d, generator=g) for m, t, d in zip(MODALITIES, lengths, cfg.input_dims)}
    available = torch.ones(B, 3, dtype=torch.bool)
    t0 = torch.full((B,), 10.0)
    return feats, available, t0


@pytest.fixture
def cfg():
    return tiny_config()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def grid_for(t0: torch.Tensor, T: int, rate: float = 2.0, step: float = 1.49, lead_in_s: float = 2.0) -> TimeGrid:
    """The fMRI samples that fit in the window after a lead-in."""
    n = int((T / rate - lead_in_s) // step)
    return TimeGrid.regular(t0 + lead_in_s, n, step, batch=t0.shape[0])
