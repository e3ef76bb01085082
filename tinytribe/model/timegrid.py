"""Stage 7 (time): from the feature-rate stream to the samples of any target grid.

A target sample at BOLD time ``tau`` covers ``[tau, tau + width_s)`` (an fMRI volume acquired over
one TR; a 1 Hz teacher row over one second). Its value is the overlap-weighted mean of the feature
steps falling in that interval, where step ``i`` covers ``[t0 + i / rate, t0 + (i + 1) / rate)``.
This replaces the design's AdaptiveAvgPool1d, which is right only when a window spans whole TRs,
and serves several grids (1 Hz teacher, 1.49 s fMRI) in one forward pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

MIN_COVERAGE = 0.9  # a target sample covered less than this by the features is warned about


@dataclass
class TimeGrid:
    """Target sample times (B, N) in stimulus seconds (NaN = padding) and the interval each covers."""

    times: torch.Tensor
    width_s: float

    @classmethod
    def regular(cls, start_s: float | torch.Tensor, n: int, step_s: float, batch: int = 1) -> "TimeGrid":
        start = torch.as_tensor(start_s, dtype=torch.float64).reshape(-1, 1).expand(batch, 1)
        return cls(start + step_s * torch.arange(n, dtype=torch.float64, device=start.device), step_s)


def overlap_weights(t0: torch.Tensor, n_steps: int, rate_hz: float, grid: TimeGrid) -> torch.Tensor:
    """Averaging weights from feature steps to grid samples.

    Args:
        t0: (B,) stimulus time of step 0.
        n_steps: T.
        rate_hz: feature rate.
        grid: the targets.

    Returns:
        (B, N, T), each row summing to 1 (0 for padding rows). A sample less than ``MIN_COVERAGE``
        covered by the features is averaged over what there is, with a warning.

    Raises:
        ValueError: a target sample's interval overlaps no feature step.
    """
    t0 = t0.to(torch.float64).reshape(-1, 1)  # (B, 1)
    step_start = t0 + torch.arange(n_steps, dtype=torch.float64, device=t0.device) / rate_hz  # (B, T)
    step_end = step_start + 1.0 / rate_hz
    tgt = grid.times.to(torch.float64).to(t0.device)  # (B, N)
    lo = torch.maximum(step_start[:, None, :], tgt[..., None])  # (B, N, T)
    hi = torch.minimum(step_end[:, None, :], tgt[..., None] + grid.width_s)
    overlap = (hi - lo).clamp_min(0.0).nan_to_num(0.0)
    total = overlap.sum(dim=-1, keepdim=True)  # (B, N, 1)
    uncovered = (total[..., 0] <= 0) & ~torch.isnan(tgt)
    if uncovered.any():
        b, n = uncovered.nonzero()[0].tolist()
        raise ValueError(f"target sample at {tgt[b, n].item():.3f} s (sample {n} of batch item {b}) lies outside "
                         f"the features ({step_start[b, 0].item():.3f}-{step_end[b, -1].item():.3f} s)")
    partial = (total[..., 0] < MIN_COVERAGE * grid.width_s - 1e-9) & ~torch.isnan(tgt)
    if partial.any():
        b, n = partial.nonzero()[0].tolist()
        warnings.warn(f"{int(partial.sum())} target samples are partly outside the features, e.g. the one at "
                      f"{tgt[b, n].item():.3f} s (batch item {b}): {total[b, n, 0].item() / grid.width_s:.0%} of its "
                      f"{grid.width_s:g} s covered", stacklevel=3)
    return (overlap / total.clamp_min(1e-12)).float()
