"""Pearson r over time, per output (vertex or parcel), in numpy and torch."""

from __future__ import annotations

import numpy as np


def pearson_r(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    """Pearson r between ``a`` and ``b`` along ``axis`` (time), for every other index.

    A constant series gives NaN (r is undefined), never a warning or a silent 0.

    Raises:
        ValueError: shapes differ.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"pearson_r: shapes differ, {a.shape} vs {b.shape}")
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    num = (a * b).sum(axis=axis)
    den = np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pearson_r_torch(a, b, dim: int = 0):
    """:func:`pearson_r` for torch tensors (differentiable; NaN where a series is constant)."""
    import torch

    if a.shape != b.shape:
        raise ValueError(f"pearson_r_torch: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    num = (a * b).sum(dim=dim)
    den = torch.sqrt((a * a).sum(dim=dim) * (b * b).sum(dim=dim))
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.full_like(num, float("nan")))
