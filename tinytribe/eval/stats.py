"""Inference for encoding scores: block-bootstrap intervals, block-permutation p-values, BH-FDR, R²
and the Algonauts parcel score, on time series of (prediction, measured) samples.

BOLD samples are autocorrelated (the haemodynamic response spreads one event over ~20-30 s, and the
noise is slow too), so resampling single TRs as if they were independent gives intervals that are too
narrow and p-values that are too small. Everything here resamples **blocks of consecutive TRs**:

- **Block length**: :func:`default_block_trs` = ``ceil(20 s / TR)`` (14 TRs at TR 1.49 s, 10 at 2 s).
  20 s is about how long the canonical HRF takes to return to baseline after an event (peak at ~5 s,
  undershoot until ~20-25 s): samples closer than that share stimulus-driven variance, samples farther
  apart share little. Blocks that long keep most of the dependence inside blocks. A series must hold at
  least two blocks.
- **Bootstrap**: circular block bootstrap (Politis & Romano 1992): ``ceil(T / L)`` blocks of L samples
  with uniformly random starts, wrapping past the end, joined and cut to T samples; the same resampled
  samples for the prediction and the data (pairs stay paired). A presentation's runs are concatenated
  first, so a block may span the join of two runs (as it may wrap from the end to the start). Intervals
  are **percentile** intervals of the resampled statistic; they inherit r's small-sample bias (about
  -r(1 - r²) / (2 n_eff)), which matters only when an interval is narrower than that (a mean over
  thousands of *independent* outputs; cortex is spatially correlated). The resampling is exact and fast:
  each resample is a (T,) vector of sample counts, and every r comes from count-weighted sums (one
  matrix product per chunk of outputs). On a 600-TR AR(1) simulation (``tests/eval/test_stats.py``)
  95% intervals cover the true r for ~91% of outputs with 14-TR blocks and ~66% with single TRs.
- **Permutation null**: the prediction's time course is cut into blocks of L at one of L phases (the
  first and last pieces may be shorter) and the pieces are put in some order, against the unchanged
  data; the same arrangement for every output, so the null keeps the spatial correlation of the maps.
  The unshuffled order is one of the M distinct arrangements (:func:`permutation_arrangements`:
  ``M = 1 + sum over phases of (n_pieces! - 1)``), and counts as one: when M <= n_perm + 1 every
  arrangement is used once and the one-sided p per output is the exact permutation p
  ``(1 + #{shuffled null r >= observed r}) / M``; otherwise n_perm arrangements are drawn **uniformly
  from all M, the unshuffled one included**, and p is the Monte Carlo permutation p
  ``(1 + #{null r >= observed r}) / (1 + n_perm)`` (Phipson & Smyth 2010). Were the arrangements a group
  under which the prediction's distribution is unchanged, either p would be exactly valid (Hemerik &
  Goeman 2018); block shuffles are that only approximately, and the tests measure it: under AR(1) nulls
  of 38 and 60 TRs, p <= 0.01 for under 1% of outputs. So p >= 1 / M: a 38-TR series in 14-TR blocks has
  M = 233 arrangements, p >= 0.0043 however many permutations are asked for. (Leaving the unshuffled
  order out, as an earlier version did, let p reach 1 / (1 + n_perm), and p <= 0.001 came 2.5x too often.)
- **Multiple comparisons**: Benjamini-Hochberg over the outputs that have a p-value (:func:`fdr_bh`).

Several subjects and presentations (:func:`tinytribe.eval.study_stats.study_stats`) are handled as
:func:`tinytribe.eval.evaluate.score` scores them: r per subject over each presentation's concatenated
samples, averaged over presentations, then outputs, then subjects. Blocks are drawn **once, on one
stimulus timeline** (the union of every series' scored (stimulus, time) samples), and each series uses
its own part of each draw (:func:`on_timeline`): series with the same scored samples get identical draws,
series that differ (a subject missing a few TRs) share the blocks of the stimulus time they have in
common. The subjects saw the same stimulus, so their errors are correlated through it, and resampling it
once for all keeps that correlation in the interval (independent draws per series make intervals about
sqrt(number of series) too narrow). Intervals are over stimulus time for these subjects; they do not
resample subjects. The same seed gives every model the same draws, so the difference of two models'
resampled means is a paired bootstrap of their difference
(:meth:`tinytribe.eval.study_stats.StudyStats.contrast`).

Cost on fsaverage5 (20,484 outputs, 300 TRs, 2 CPU cores): ~4 s per series (subject x presentation) for
1,000 resamples, ~10-25 s for 1,000 permutations; memory stays near ``CHUNK_BYTES`` per chunk of outputs.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tinytribe.eval.metrics import pearson_r

HRF_SPAN_S = 20.0           # seconds over which one event's BOLD response lasts (block length rule)
CHUNK_BYTES = 64 * 2 ** 20  # working memory per chunk of outputs

# series: subjects x presentations x (pred (T_k, V), data (T_k, V)); draw(s, k): that series' draws
Series = list[list[tuple[np.ndarray, np.ndarray]]]
Draw = Callable[[int, int], np.ndarray]


def default_block_trs(tr_s: float, span_s: float = HRF_SPAN_S) -> int:
    """The block length in TRs for a repetition time: ``ceil(span_s / tr_s)`` (at least 1)."""
    if not tr_s > 0:
        raise ValueError(f"tr_s must be a positive number of seconds, got {tr_s}")
    return max(1, math.ceil(span_s / tr_s - 1e-9))


def _check_blocks(n_trs: int, block_trs: int, where: str) -> None:
    if int(block_trs) != block_trs or block_trs < 1:
        raise ValueError(f"{where}: block_trs must be a positive integer, got {block_trs}")
    if n_trs < 2 * block_trs:
        raise ValueError(f"{where}: {n_trs} samples hold fewer than 2 blocks of block_trs={block_trs}; "
                         f"use a shorter block or more samples")


def block_bootstrap_indices(n_trs: int, *, block_trs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_trs) sample indices of circular block bootstrap resamples of a series of n_trs."""
    _check_blocks(n_trs, block_trs, "block_bootstrap_indices")
    n_blocks = math.ceil(n_trs / block_trs)
    starts = rng.integers(0, n_trs, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block_trs)).reshape(n_boot, -1)[:, :n_trs]
    return idx % n_trs


def _phase_cuts(n_trs: int, block_trs: int) -> list[list[int]]:
    """Per phase 0..block_trs-1, where a series of n_trs is cut into blocks of block_trs at that phase."""
    return [[c for c in range(phase, n_trs, block_trs) if c > 0] for phase in range(block_trs)]


def permutation_arrangements(n_trs: int, block_trs: int) -> int:
    """M, the number of distinct orders :func:`block_permutation_indices` can produce (the unshuffled one
    included): ``1 + sum over phases of (n_pieces! - 1)``.

    The non-identity orders of different phases differ: any shuffled order starts a piece somewhere
    other than after its predecessor, and that piece's start (a cut, 0 < cut < n_trs) names the phase
    (``cut % block_trs``); given the phase, the order of the pieces is read off. Only the unshuffled
    order is shared by every phase, so it counts once. 38 TRs in 14-TR blocks: M = 233.
    """
    _check_blocks(n_trs, block_trs, "permutation_arrangements")
    return 1 + sum(math.factorial(len(cuts) + 1) - 1 for cuts in _phase_cuts(n_trs, block_trs))


def block_permutation_indices(n_trs: int, *, block_trs: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Orders of the samples: blocks of block_trs cut at one of block_trs phases, put in some order.

    When the M distinct orders (:func:`permutation_arrangements`) number at most ``n_perm + 1``, all
    M - 1 shuffled ones, once each (``rng`` unused): the p-value ``(1 + #{null >= observed}) / M`` is
    then the exact permutation p over all arrangements, the observed (unshuffled) one counted by the
    ``1 +``. Otherwise n_perm orders drawn uniformly from all M, the unshuffled one included (drawn as
    often as any other): the Monte Carlo p ``(1 + #{null >= observed}) / (1 + n_perm)`` then treats the
    observed order as one more draw of the same kind.

    Returns:
        (min(n_perm, M - 1), n_trs) sample indices.
    """
    _check_blocks(n_trs, block_trs, "block_permutation_indices")
    cuts = _phase_cuts(n_trs, block_trs)
    shuffled = [math.factorial(len(c) + 1) - 1 for c in cuts]   # non-identity orders per phase
    m = 1 + sum(shuffled)
    samples = np.arange(n_trs)
    if m - 1 <= n_perm:
        return np.array([np.concatenate([pieces[j] for j in order])
                         for pieces in (np.split(samples, c) for c in cuts)
                         for order in itertools.permutations(range(len(pieces)))
                         if order != tuple(range(len(pieces)))])
    weights = np.array([k / m for k in shuffled] + [1 / m])      # int / int: exact for huge factorials
    picks = rng.choice(block_trs + 1, size=n_perm, p=weights / weights.sum())   # block_trs: unshuffled
    out = np.tile(samples, (n_perm, 1))
    for b, phase in enumerate(picks):
        if phase == block_trs:
            continue
        pieces = np.split(samples, cuts[phase])                  # 2 or more
        order = rng.permutation(len(pieces))
        while (order == np.arange(len(pieces))).all():
            order = rng.permutation(len(pieces))
        out[b] = np.concatenate([pieces[j] for j in order])
    return out


def block_bootstrap_counts(n_trs: int, *, block_trs: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_trs) how often each sample appears in each :func:`block_bootstrap_indices` resample:
    the weights of count-weighted sums, which equal sums over the resampled series."""
    idx = block_bootstrap_indices(n_trs, block_trs=block_trs, n_boot=n_boot, rng=rng)
    rows = np.arange(n_boot)[:, None] * n_trs
    return np.bincount((idx + rows).ravel(), minlength=n_boot * n_trs).reshape(n_boot, n_trs).astype(np.float64)


def make_draws(lengths: list[list[int]], shared: bool, make: Callable[[int], np.ndarray]) -> Draw:
    """``draw(s, k)`` for series of these lengths (subjects x presentations): one ``make(T)`` for all
    when ``shared`` (one stimulus timeline), else one per series, made in order."""
    if shared:
        one = make(lengths[0][0])
        return lambda s, k: one
    each = [[make(t) for t in row] for row in lengths]
    return lambda s, k: each[s][k]


def on_timeline(draws: np.ndarray, positions: list[list[np.ndarray]], *, orders: bool) -> Draw:
    """``draw(s, k)`` for series that sit at ``positions`` of one shared timeline whose draws are
    ``draws`` (n, T_union), made once for all of them.

    Args:
        draws: (n, T_union) bootstrap sample counts, or (with ``orders``) sample orders, of the timeline.
        positions: subjects x presentations: (T_k,) increasing positions of the series' samples in it.
        orders: ``draws`` are sample orders (:func:`block_permutation_indices`): a series gets its own
            samples in the order the shared arrangement puts them (renumbered 0..T_k-1); otherwise a
            series gets the counts at its positions.

    Series at the same positions get the same array (one copy).
    """
    n, t_union = draws.shape
    cache: dict[bytes, np.ndarray] = {}

    def restrict(pos: np.ndarray) -> np.ndarray:
        if not orders:
            return draws[:, pos]
        local = np.full(t_union, -1)
        local[pos] = np.arange(len(pos))
        mapped = local[draws]                                    # (n, T_union), -1 where not the series'
        return mapped[mapped >= 0].reshape(n, len(pos))          # each row keeps its T_k samples, in order

    def draw(s: int, k: int) -> np.ndarray:
        pos = np.asarray(positions[s][k], np.int64)
        key = pos.tobytes()
        if key not in cache:
            cache[key] = restrict(pos)
        return cache[key]

    return draw


def _standardise(x: np.ndarray) -> np.ndarray:
    """(T, V) z-scores over time (population sd); a constant column becomes NaN."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    sd = np.sqrt((x * x).mean(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / np.where(sd > 0, sd, np.nan)


def _weighted_r(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(n_boot, V) Pearson r of (T, V) ``x`` and ``y`` with (n_boot, T) sample counts ``w``."""
    x, y = np.nan_to_num(_standardise(x)), np.nan_to_num(_standardise(y))   # conditioning; constant -> 0
    n = w.sum(1, keepdims=True)
    sx, sy, sxx, syy, sxy = np.split(w @ np.concatenate([x, y, x * x, y * y, x * y], axis=1), 5, axis=1)
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    den = np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12 * n, cov / np.where(den > 0, den, 1.0), np.nan)


class _Mean:
    """A running NaN-ignoring mean of equally shaped arrays."""

    def __init__(self) -> None:
        self.sum, self.n = 0.0, 0

    def add(self, x: np.ndarray) -> None:
        ok = np.isfinite(x)
        self.sum, self.n = self.sum + np.where(ok, x, 0.0), self.n + ok

    def value(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.sum / np.maximum(self.n, 1), np.nan)


def _chunks(cols: np.ndarray, per_col_bytes: int) -> list[np.ndarray]:
    size = max(1, CHUNK_BYTES // max(per_col_bytes, 1))
    return [cols[a:a + size] for a in range(0, len(cols), size)]


def percentile_bounds(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of (n_boot, ...) resamples, NaN ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN outputs: NaN bounds
        lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def group_bootstrap(series: Series, draw: Draw, cols: np.ndarray, masks: dict[str, np.ndarray], *,
                    per_output: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Resampled group statistics: the engine behind the bootstrap intervals.

    Args:
        series: subjects x presentations x (pred, data), each (T_k, V).
        draw: ``draw(s, k)``: the (n_boot, T_k) sample counts of presentation k of subject s.
        cols: the outputs to use (e.g. the cortex), indices into V.
        masks: name -> (V,) bool: sets of outputs whose mean r is resampled.
        per_output: also return the resampled group r of every output in ``cols``.

    Returns:
        name -> (n_boot,) resampled group mean r (mean over the mask's outputs in ``cols`` per subject,
        then over subjects); and (n_boot, len(cols)) resampled group r per output (mean over subjects),
        or None.
    """
    n_boot, n_sub = draw(0, 0).shape[0], len(series)
    sums = {name: np.zeros((n_sub, n_boot)) for name in masks}
    counts = {name: np.zeros((n_sub, n_boot)) for name in masks}
    per_col = []
    for chunk in _chunks(cols, n_boot * 8 * 12):
        group = _Mean()
        for s, presentations in enumerate(series):
            subject = _Mean()
            for k, (p, d) in enumerate(presentations):
                subject.add(_weighted_r(p[:, chunk], d[:, chunk], draw(s, k)))
            rs = subject.value()                                   # (n_boot, chunk): mean over presentations
            group.add(rs)
            for name, mask in masks.items():
                v = rs[:, mask[chunk]]
                ok = np.isfinite(v)
                sums[name][s] += np.where(ok, v, 0.0).sum(1)
                counts[name][s] += ok.sum(1)
        if per_output:
            per_col.append(group.value())
    out = {}
    for name in masks:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)        # a mask with no output: NaN
            out[name] = np.nanmean(np.where(counts[name] > 0, sums[name] / counts[name], np.nan), axis=0)
    return out, (np.concatenate(per_col, axis=1) if per_output else None)


def group_permutation_p(series: Series, draw: Draw, cols: np.ndarray) -> np.ndarray:
    """(len(cols),) one-sided p of the group r per output against a permutation null: the engine behind
    :func:`block_permutation_p`.

    Args:
        series: subjects x presentations x (pred, data), each (T_k, V).
        draw: ``draw(s, k)``: the (n_perm, T_k) sample orders applied to that series' prediction.
        cols: the outputs to test.

    Returns:
        ``(1 + #{null >= observed}) / (1 + n_perm)``, NaN where the observed r is undefined; a null r
        within 1e-12 of the observed one (an unshuffled draw) counts as ``>=``.
    """
    n_perm = draw(0, 0).shape[0]
    t_max = max(p.shape[0] for pres in series for p, _ in pres)
    out = []
    for chunk in _chunks(cols, n_perm * 8 * 3):
        observed, null = _Mean(), _Mean()
        for s, presentations in enumerate(series):
            obs_s, null_s = _Mean(), _Mean()
            for k, (p, d) in enumerate(presentations):
                zx, zy = _standardise(p[:, chunk]), _standardise(d[:, chunk])
                orders = draw(s, k)
                obs_s.add((zx * zy).mean(0))
                nulls = np.empty((n_perm, len(chunk)))
                step = max(1, CHUNK_BYTES // (8 * t_max * len(chunk)))
                for a in range(0, n_perm, step):                   # r of permuted z-scores: mean of products
                    nulls[a:a + step] = np.einsum("btv,tv->bv", zx[orders[a:a + step]], zy) / zx.shape[0]
                null_s.add(nulls)
            observed.add(obs_s.value())
            null.add(null_s.value())
        obs, nul = observed.value(), null.value()
        p = (1 + (nul >= obs - 1e-12).sum(0)) / (1 + n_perm)
        out.append(np.where(np.isfinite(obs), p, np.nan))
    return np.concatenate(out)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float

    def scaled(self, by: float) -> "Interval":
        """The estimate and bounds divided by ``by`` (e.g. a noise ceiling, held fixed); NaN unless by > 0."""
        if not by > 0:
            return Interval(float("nan"), float("nan"), float("nan"))
        return Interval(self.estimate / by, self.low / by, self.high / by)

    def to_dict(self) -> dict:
        return {k: json_float(getattr(self, k)) for k in ("estimate", "low", "high")}


def json_float(x: float) -> float | None:
    """A plain float for JSON (NaN -> None)."""
    return float(x) if np.isfinite(x) else None


@dataclass
class BootstrapCI:
    """Block-bootstrap intervals of r.

    Attributes:
        r: (V,) observed r per output.
        means: mask name -> the mean r over its outputs with its interval (``"all"`` without masks).
        r_low, r_high: (V,) per-output interval bounds (None unless asked for).
        block_trs, n_boot, level: how the intervals were made.
    """

    r: np.ndarray
    means: dict[str, Interval]
    r_low: np.ndarray | None
    r_high: np.ndarray | None
    block_trs: int
    n_boot: int
    level: float


def _check_pair(pred: np.ndarray, data: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    pred, data = np.asarray(pred), np.asarray(data)
    if pred.ndim == 1 and data.ndim == 1:
        pred, data = pred[:, None], data[:, None]
    if pred.shape != data.shape or pred.ndim != 2:
        raise ValueError(f"{where}: pred and data must be the same (T, V) shape, got {pred.shape} and {data.shape}")
    return pred, data


def block_bootstrap_ci(pred: np.ndarray, data: np.ndarray, *, block_trs: int, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0, masks: dict[str, np.ndarray] | None = None,
                       per_output: bool = False) -> BootstrapCI:
    """Circular block bootstrap percentile intervals of Pearson r between a prediction and the data.

    Args:
        pred: (T, V) predicted time courses (or (T,) for one output).
        data: (T, V) measured time courses, the same samples.
        block_trs: block length in samples (:func:`default_block_trs`; 1 is the iid bootstrap).
        n_boot: resamples.
        level: coverage of the intervals (0.95: the 2.5th and 97.5th percentiles).
        seed: the resamples' random seed (the same seed resamples different models identically).
        masks: name -> (V,) bool sets of outputs (ROIs) whose mean r gets an interval; default all.
        per_output: also give every output's own interval.

    Returns:
        A :class:`BootstrapCI`; means ignore outputs whose r is undefined (constant series).
    """
    pred, data = _check_pair(pred, data, "block_bootstrap_ci")
    if not 0 < level < 1:
        raise ValueError(f"block_bootstrap_ci: level must be in (0, 1), got {level}")
    masks = {"all": np.ones(pred.shape[1], bool)} if masks is None else masks
    for name, m in masks.items():
        if np.shape(m) != (pred.shape[1],):
            raise ValueError(f"block_bootstrap_ci: mask {name!r} has shape {np.shape(m)}, expected ({pred.shape[1]},)")
    rng = np.random.default_rng(seed)
    draw = make_draws([[pred.shape[0]]], True,
                      lambda t: block_bootstrap_counts(t, block_trs=block_trs, n_boot=n_boot, rng=rng))
    boot, cols = group_bootstrap([[(pred, data)]], draw, np.arange(pred.shape[1]), masks, per_output=per_output)
    r = pearson_r(pred, data)
    means = {}
    for name, m in masks.items():
        lo, hi = percentile_bounds(boot[name], level)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means[name] = Interval(float(np.nanmean(r[m])) if m.any() else float("nan"), float(lo), float(hi))
    lo, hi = percentile_bounds(cols, level) if per_output else (None, None)
    return BootstrapCI(r, means, lo, hi, int(block_trs), int(n_boot), float(level))


def block_permutation_p(pred: np.ndarray, data: np.ndarray, *, block_trs: int, n_perm: int = 1000,
                        seed: int = 0) -> np.ndarray:
    """One-sided block-permutation p-value of Pearson r per output (H1: r > 0).

    Args:
        pred: (T, V) predicted time courses (or (T,)); its blocks are permuted.
        data: (T, V) measured time courses, unchanged.
        block_trs: block length in samples (:func:`default_block_trs`).
        n_perm: permutations, the same for every output.
        seed: the permutations' random seed.

    Returns:
        (V,) ``(1 + #{null r >= observed r}) / (1 + n_perm)``; NaN where r is undefined. A short series
        whose M = :func:`permutation_arrangements` <= n_perm + 1 uses all M - 1 shuffled orders instead
        (exact p, ``(1 + #) / M``); otherwise the n_perm are drawn uniformly from all M, the unshuffled one
        included (:func:`block_permutation_indices`). Either way p >= about 1 / M.
    """
    pred, data = _check_pair(pred, data, "block_permutation_p")
    rng = np.random.default_rng(seed)
    draw = make_draws([[pred.shape[0]]], True,
                      lambda t: block_permutation_indices(t, block_trs=block_trs, n_perm=n_perm, rng=rng))
    return group_permutation_p([[(pred, data)]], draw, np.arange(pred.shape[1]))


def fdr_bh(p: np.ndarray, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg false discovery rate control over the finite p-values.

    Args:
        p: (...,) p-values; NaN (no test, e.g. the medial wall) are left out of the count m.
        q: the false discovery rate.

    Returns:
        (...,) bool discoveries (adjusted p <= q) and (...,) BH-adjusted p-values (NaN where p is NaN).
    """
    p = np.asarray(p, np.float64)
    if not 0 < q < 1:
        raise ValueError(f"fdr_bh: q must be in (0, 1), got {q}")
    ok = np.isfinite(p)
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("fdr_bh: p-values must lie in [0, 1]")
    flat = p[ok]
    order = np.argsort(flat, kind="stable")
    ranked = flat[order] * flat.size / np.arange(1, flat.size + 1)
    adjusted = np.empty_like(flat)
    adjusted[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.full(p.shape, np.nan)
    out[ok] = adjusted
    return np.where(ok, out <= q, False), out


def r2_score(pred: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Explained variance of the **raw** prediction per output: ``1 - SSE / SST`` over time.

    No refit and no rescaling (as voxelwise-modelling papers report it): a prediction on another scale
    or offset than the data is penalised, and R² is negative when it is worse than the data's mean. SST
    is around the data's mean over the same samples as r.

    Args:
        pred, data: (T, V) (or (T,)).

    Returns:
        (V,) R²; NaN where the data are constant.
    """
    pred, data = _check_pair(pred, data, "r2_score")
    pred, data = pred.astype(np.float64), data.astype(np.float64)
    sse = ((data - pred) ** 2).sum(0)
    sst = ((data - data.mean(0)) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1.0), np.nan)


ALGONAUTS_N_PARCELS = 1000


def schaefer_1000_labels(space: str, cortex: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """The Schaefer-1000 parcel (1..1000, 0 for none) of every output of ``space``, or None and why not.

    fsaverage5 uses the shipped surface atlas, fsaverage4 its vertices of it (every parcel keeps some),
    and a ``schaefer-1000`` space is already parcels. Outputs outside ``cortex`` get label 0.
    """
    from tinytribe.spaces import fsaverage4_indices, parcellation

    if space in ("fsaverage5", "fsaverage4"):
        labels = np.array(parcellation("schaefer-1000")[0], np.int64)
        labels = labels[fsaverage4_indices()] if space == "fsaverage4" else labels
    elif space == "schaefer-1000":
        labels = np.arange(1, ALGONAUTS_N_PARCELS + 1)
    else:
        return None, (f"no Schaefer-1000 parcels in {space}: the Algonauts score needs fsaverage5, fsaverage4 "
                      f"or schaefer-1000 outputs")
    if cortex is not None:
        labels = np.where(cortex, labels, 0)
    return labels, ("Algonauts convention: prediction and data averaged within each Schaefer-1000 parcel "
                    "(surface atlas), r per parcel, mean over parcels")


def parcel_series(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(T, 1000) the mean of (T, V) ``x`` over each Schaefer-1000 parcel (NaN for a parcel with no output)."""
    from tinytribe.spaces import parcel_means

    return parcel_means(np.asarray(x), labels, ALGONAUTS_N_PARCELS).astype(np.float64)


def algonauts_score(pred: np.ndarray, data: np.ndarray, space: str,
                    cortex: np.ndarray | None = None) -> tuple[float, np.ndarray | None, str]:
    """The Algonauts score: mean over Schaefer-1000 parcels of r between parcel-averaged time series.

    Args:
        pred, data: (T, V) in ``space``.
        space: the outputs' space; only spaces with Schaefer-1000 parcels have a score.
        cortex: (V,) outputs to average (the medial wall left out).

    Returns:
        The score (NaN when the space has no Schaefer-1000 parcels), the (1000,) r per parcel (None
        then), and a note saying what was computed, or why not.
    """
    pred, data = _check_pair(pred, data, "algonauts_score")
    labels, note = schaefer_1000_labels(space, cortex)
    if labels is None:
        return float("nan"), None, note
    if labels.shape != (pred.shape[1],):
        raise ValueError(f"algonauts_score: data have {pred.shape[1]} outputs, {space} has {labels.shape[0]}")
    r = pearson_r(parcel_series(pred, labels), parcel_series(data, labels))
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"), r, note
