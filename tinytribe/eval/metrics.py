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


def resample(values: np.ndarray, times: np.ndarray, width_s: float, target_times: np.ndarray,
             target_width_s: float, min_coverage: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Samples covering ``[t, t + width_s)`` averaged onto target samples ``[tau, tau + target_width_s)``.

    Each target is the overlap-weighted mean of the samples it overlaps (e.g. a 1 Hz teacher onto a
    1.49 s TR grid). Returns the resampled values (n_target, ...) and which targets are covered for at
    least ``min_coverage`` of their width (the others are NaN).
    """
    from tinytribe.grids import overlap

    values = np.asarray(values, np.float64)
    w = overlap(times, width_s, target_times, target_width_s)    # (n_target, n_source)
    covered = w.sum(1) >= min_coverage * target_width_s - 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.tensordot(w / w.sum(1, keepdims=True), values, axes=(1, 0))
    out[~covered] = np.nan
    return out, covered
