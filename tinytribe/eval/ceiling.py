"""The noise ceiling, with one convention for the whole project.

**The ceiling is the expected Pearson r between a perfect model and one measured run**:
``sqrt(reliability)``, where the reliability is the correlation between two independent runs of the
same stimulus (the fraction of a run's variance that the stimulus explains). It is estimated per
vertex from repeated presentations by split-half correlation with the Spearman-Brown correction:

1. split the R repeats into two halves of ``m = R // 2`` (an odd repeat out; every split is used,
   or 64 random ones when there are more);
2. correlate the two halves' means over time: ``r_half`` estimates the reliability of an m-run mean;
3. Spearman-Brown back to one run: ``rho_1 = r_half / (m - (m - 1) * r_half)`` (for R = 2 or 3 this is
   the mean correlation between pairs of single runs);
4. ``ceiling = sqrt(max(rho_1, 0))``.

A model's ``r / ceiling`` is then the fraction of the explainable correlation it reaches.

**Summaries pool reliabilities, not ceilings** (:func:`pooled_ceiling`): a group's ceiling at an
output is ``sqrt(max(mean over subjects of rho_1, 0))``, and an ROI's or the cortex's ceiling is the
mean of that over its outputs. On short repeats single-subject reliabilities are noisy (-0.09 to 0.58
for 60 TRs of one true value), and the mean of their clipped square roots reads low (square root is
concave); the pooled estimate does not (``tests/eval/test_ceiling.py`` checks both on a simulation with
a known ceiling). Per-subject ceilings, ``sqrt(max(rho_1, 0))``, are reported beside it.

Without repeats, :func:`inter_subject_predictivity` (each subject against the mean of the others) is a
reference, not a ceiling.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from tinytribe.eval.metrics import pearson_r


def _splits(r: int, rng: np.random.Generator, max_splits: int = 64) -> list[tuple[list[int], list[int]]]:
    m = r // 2
    out = []
    for a in itertools.combinations(range(r), m):
        rest = [i for i in range(r) if i not in a]
        for b in itertools.combinations(rest, m):
            if a < b:  # each unordered pair of halves once
                out.append((list(a), list(b)))
    if len(out) > max_splits:
        out = [out[i] for i in rng.choice(len(out), max_splits, replace=False)]
    return out


def split_half_reliability(repeats: np.ndarray, seed: int = 0) -> np.ndarray:
    """Single-run reliability per output from repeated runs.

    Args:
        repeats: (R, T, V) -- R >= 2 presentations of the same stimulus (or the same concatenation of
            stimuli), aligned in time.

    Returns:
        (V,) reliability (may be negative for outputs with no reliable signal; NaN where constant).
    """
    repeats = np.asarray(repeats, np.float64)
    if repeats.ndim != 3 or repeats.shape[0] < 2:
        raise ValueError(f"split_half_reliability needs (repeats >= 2, T, V), got {repeats.shape}")
    m = repeats.shape[0] // 2
    rs = [pearson_r(repeats[a].mean(0), repeats[b].mean(0)) for a, b in _splits(repeats.shape[0],
                                                                                 np.random.default_rng(seed))]
    r_half = np.mean(rs, axis=0)
    return r_half / (m - (m - 1) * r_half)


def ceiling_of(reliability: np.ndarray) -> np.ndarray:
    """``sqrt(max(reliability, 0))`` elementwise; NaN (no reliability: a constant output) stays NaN."""
    rel = np.asarray(reliability, np.float64)
    return np.where(np.isnan(rel), np.nan, np.sqrt(np.clip(rel, 0.0, None)))


def noise_ceiling(repeats: np.ndarray, seed: int = 0) -> np.ndarray:
    """(V,) expected r between a perfect model and one run: ``sqrt(max(reliability, 0))`` (0 where a
    run is constant)."""
    return np.nan_to_num(ceiling_of(split_half_reliability(repeats, seed)), nan=0.0)


def pooled_ceiling(reliability: np.ndarray) -> np.ndarray:
    """(V,) group ceiling from (S, V) single-run reliabilities: ``sqrt(max(mean_s rho_1, 0))`` (NaN
    where every subject's reliability is NaN)."""
    rel = np.asarray(reliability, np.float64)
    if rel.ndim != 2:
        raise ValueError(f"pooled_ceiling needs (subjects, outputs) reliabilities, got shape {rel.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN outputs (the medial wall)
        mean = np.nanmean(rel, axis=0)
    return ceiling_of(mean)


def inter_subject_predictivity(data: np.ndarray) -> np.ndarray:
    """(S, V): Pearson r of each subject's time course with the mean of the other subjects'.

    Args:
        data: (S, T, V), S >= 2 subjects on the same stimuli and grid.
    """
    data = np.asarray(data, np.float64)
    if data.ndim != 3 or data.shape[0] < 2:
        raise ValueError(f"inter_subject_predictivity needs (subjects >= 2, T, V), got {data.shape}")
    total = data.sum(0)
    return np.stack([pearson_r(data[s], (total - data[s]) / (data.shape[0] - 1)) for s in range(data.shape[0])])
