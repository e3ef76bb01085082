"""Samples that cover intervals of time, and how much one grid's samples overlap another's.

Every time series in Tiny-TRIBE is a grid of samples, each covering ``[t, t + width)``: feature steps
(0.5 s), teacher rows (1 s), fMRI volumes (one TR). Moving values from one grid to another is an
overlap-weighted mean; this is the one place that computes the overlaps in numpy (the model's torch
version is ``tinytribe.model.timegrid.overlap_weights``).
"""

from __future__ import annotations

import numpy as np


def overlap(src_times: np.ndarray, src_width: float, dst_times: np.ndarray, dst_width: float) -> np.ndarray:
    """Seconds of overlap between each target sample and each source sample: (n_dst, n_src)."""
    src = np.asarray(src_times, np.float64)
    dst = np.asarray(dst_times, np.float64)
    lo = np.maximum(dst[:, None], src[None, :])
    hi = np.minimum(dst[:, None] + dst_width, src[None, :] + src_width)
    return np.clip(hi - lo, 0.0, None)
