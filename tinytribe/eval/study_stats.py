"""Scores a neuroscientist can publish: every model of a study's held-out split with block-bootstrap
intervals, block-permutation p-values with BH-FDR, r / ceiling, R² and the Algonauts score.

    stats = study_stats(study, study.split("test"), preds, rois=rois_for_space(study.study.space))
    print(stats.table())                        # ends with the caveats (short series, differing timelines)
    stats.contrast("student", "ridge")          # paired interval of the difference of mean r
    stats.to_json("runs/stats.json")

The samples, the alignment and the averaging are :func:`tinytribe.eval.evaluate.score`'s (so the point
estimates equal its scores); the resampling is :mod:`tinytribe.eval.stats`'s: circular blocks of
``ceil(20 s / TR)`` TRs, drawn once on the stimulus timeline every subject and presentation is scored on
(each series uses its part of each draw), the same draws for every model (same seed), so two models'
resampled means are paired (:meth:`StudyStats.contrast`). Intervals are percentile intervals over
stimulus time for these subjects; r / ceiling divides r and its bounds by the pooled ceiling, which is
held fixed (its own uncertainty is not in the interval). :attr:`StudyStats.caveats` says in words what
limits this split's intervals and p-values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe.data.splits import Selection, as_selection
from tinytribe.data.study import LoadedStudy
from tinytribe.eval.evaluate import Predictions, score, scored_masks, subject_samples
from tinytribe.eval.metrics import pearson_r
from tinytribe.eval.stats import (ALGONAUTS_N_PARCELS, Interval, block_bootstrap_counts, block_permutation_indices,
                                  default_block_trs, fdr_bh, group_bootstrap, group_permutation_p, json_float,
                                  on_timeline, parcel_series, percentile_bounds, permutation_arrangements, r2_score,
                                  schaefer_1000_labels)

CONVENTIONS = {
    "r": "Pearson r per subject over each presentation's concatenated scored TRs, mean over presentations; "
         "ROI and cortex means over outputs per subject, then over subjects",
    "bootstrap": "circular block bootstrap over TRs, percentile intervals; blocks drawn once on the stimulus timeline "
                 "of all scored samples, each subject and presentation resampled on its part of it, the same draws "
                 "for every model (contrasts are paired); subjects are not resampled",
    "block_length": "ceil(20 s / TR) TRs: the span of one event's haemodynamic response",
    "permutation": "the prediction's blocks (cut at one of block_trs phases) put in another order against the data, "
                   "the same arrangement for every output; one-sided p of the group r over all M distinct "
                   "arrangements when M <= n_perm + 1 (exact: (1 + #null >= observed) / M), else over n_perm drawn "
                   "uniformly from all M, the unshuffled one included ((1 + #null >= observed) / (1 + n_perm)); "
                   "p >= 1 / M",
    "fdr": "Benjamini-Hochberg across the cortex outputs of the study's space, per model",
    "r2": "1 - SSE/SST of the raw prediction (no refit; negative when worse than the mean), same samples as r",
    "ceiling": "r / ceiling divides r and its interval by the pooled noise ceiling, held fixed",
}


@dataclass
class ModelStats:
    """One model's scores with their uncertainty.

    Attributes:
        mean_r: the mean r over cortex (outputs, then subjects) with its interval.
        rois: ROI name -> its mean r with its interval.
        r_over_ceiling: ``mean_r`` over the pooled cortex ceiling (None without repeats).
        rois_over_ceiling: the same per ROI (None without repeats).
        r2_mean: the mean R² over cortex (outputs, then subjects).
        algonauts: the Algonauts score with its interval (None when the space has no Schaefer-1000).
        p: (V,) one-sided block-permutation p of the subject-mean r (NaN off cortex).
        p_adjusted: (V,) BH-adjusted p.
        significant: (V,) bool, BH discoveries at the study's q.
        r: (V,) subject-mean r; r_low, r_high: (V,) its per-output bounds (None unless asked for).
        boot_mean: (n_boot,) the resampled cortex mean r, one value per bootstrap draw; every model of a
            :class:`StudyStats` has the same draws (paired resamples; not in :meth:`to_dict`).
    """

    mean_r: Interval
    rois: dict[str, Interval]
    r_over_ceiling: Interval | None
    rois_over_ceiling: dict[str, Interval] | None
    r2_mean: float
    algonauts: Interval | None
    p: np.ndarray
    p_adjusted: np.ndarray
    significant: np.ndarray
    r: np.ndarray
    r_low: np.ndarray | None = None
    r_high: np.ndarray | None = None
    boot_mean: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def n_significant(self) -> int:
        return int(self.significant.sum())

    def to_dict(self, per_output: bool = False) -> dict:
        """Plain floats, lists and dicts; the (V,) maps only when ``per_output``."""
        out = {"mean_r": self.mean_r.to_dict(), "rois": {k: v.to_dict() for k, v in self.rois.items()},
               "r_over_ceiling": self.r_over_ceiling.to_dict() if self.r_over_ceiling else None,
               "rois_over_ceiling": ({k: v.to_dict() for k, v in self.rois_over_ceiling.items()}
                                     if self.rois_over_ceiling is not None else None),
               "r2_mean": json_float(self.r2_mean), "algonauts": self.algonauts.to_dict() if self.algonauts else None,
               "n_significant": self.n_significant, "n_tested": int(np.isfinite(self.p).sum())}
        if per_output:
            maps = {"r": self.r, "p": self.p, "p_adjusted": self.p_adjusted, "r_low": self.r_low, "r_high": self.r_high}
            out |= {k: [json_float(x) for x in v] for k, v in maps.items() if v is not None}
            out["significant"] = [bool(x) for x in self.significant]
        return out


# Coverage of 95% intervals in AR(1) simulations (phi 0.8 per TR, 3,000 outputs and 200 means over 30 outputs per
# length); tests/eval/test_stats.py re-measures the 38-TR numbers
FEW_BLOCKS = 10
FEW_BLOCKS_COVERAGE = ("in AR(1) simulations 95% intervals covered 83% of outputs' r (75% of a mean over outputs "
                       "sharing one signal) at 38 TRs / 14-TR blocks (2.7 blocks), 85% (81%) at 5 blocks, "
                       "87% (86%) at 10")


@dataclass
class StudyStats:
    """Every model's :class:`ModelStats` and how they were made.

    Attributes:
        caveats: one line each on what limits these intervals and p-values (few blocks per series,
            series on different timelines, a p-value floor set by few arrangements); empty when none.
    """

    study: str
    space: str
    subjects: list[str]
    stimuli: list[str]
    n_samples: int
    tr_s: float
    block_trs: int
    n_boot: int
    n_perm: int
    level: float
    q: float
    shared_timeline: bool
    ceiling_mean: float | None
    algonauts_note: str
    models: dict[str, ModelStats]
    roi_outputs: dict[str, int] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)

    def contrast(self, a: str, b: str) -> Interval:
        """Mean r over cortex of model ``a`` minus that of ``b``, with the paired bootstrap interval.

        The estimate is the difference of the point estimates (:func:`tinytribe.eval.evaluate.score`'s);
        the bounds are percentiles of the per-resample differences of the two models' resampled means
        (:attr:`ModelStats.boot_mean`; the same draws for both), at :attr:`level`.

        Raises:
            ValueError: ``a`` or ``b`` is not one of the models, or has no bootstrap draws.
        """
        for name in (a, b):
            if name not in self.models:
                raise ValueError(f"contrast: no model {name!r}; the models are {', '.join(map(repr, self.models))}")
        ma, mb = self.models[a], self.models[b]
        if ma.boot_mean.shape != (self.n_boot,) or mb.boot_mean.shape != (self.n_boot,):
            raise ValueError(f"contrast: {a!r} or {b!r} has no {self.n_boot} bootstrap draws (boot_mean)")
        lo, hi = percentile_bounds(ma.boot_mean - mb.boot_mean, self.level)
        return Interval(ma.mean_r.estimate - mb.mean_r.estimate, float(lo), float(hi))

    def to_dict(self, per_output: bool = False) -> dict:
        return {"study": self.study, "space": self.space, "subjects": self.subjects, "stimuli": self.stimuli,
                "n_samples": self.n_samples, "tr_s": self.tr_s, "block_trs": self.block_trs,
                "block_s": self.block_trs * self.tr_s, "n_boot": self.n_boot, "n_perm": self.n_perm,
                "level": self.level, "q": self.q, "shared_timeline": self.shared_timeline, "caveats": self.caveats,
                "ceiling_mean": json_float(self.ceiling_mean) if self.ceiling_mean is not None else None,
                "algonauts_note": self.algonauts_note, "roi_outputs": self.roi_outputs, "conventions": CONVENTIONS,
                "models": {n: m.to_dict(per_output) for n, m in self.models.items()}}

    def to_json(self, path: str | Path, per_output: bool = False) -> Path:
        from tinytribe._io import atomic_write_json

        return atomic_write_json(path, self.to_dict(per_output))

    def table(self) -> str:
        """Each model's mean r [interval], r / ceiling, R², Algonauts score and FDR discoveries as text."""
        pct = f"{self.level:.0%}"
        lines = [f"{self.study}: {len(self.subjects)} subjects, {self.n_samples} TRs per presentation, {self.space}; "
                 f"{pct} circular block bootstrap ({self.n_boot} x {self.block_trs} TRs = "
                 f"{self.block_trs * self.tr_s:.0f} s blocks), {self.n_perm} block permutations, BH q={self.q}"]
        w = max([len(n) for n in self.models] + [5]) + 2
        fmt = lambda iv: f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]" if iv else "-"  # noqa: E731
        lines.append(f"{'model':<{w}}{'mean r [CI]':<24}{'r / ceiling [CI]':<24}{'R2':>8}  {'Algonauts [CI]':<24}"
                     f"{'FDR discoveries':>16}")
        for name, m in self.models.items():
            lines.append(f"{name:<{w}}{fmt(m.mean_r):<24}{fmt(m.r_over_ceiling):<24}{m.r2_mean:>8.3f}  "
                         f"{fmt(m.algonauts):<24}{m.n_significant:>10} / {int(np.isfinite(m.p).sum())}")
        lines += [f"caveat: {c}" for c in self.caveats]
        return "\n".join(lines)


def study_stats(study: LoadedStudy, runs: Selection | list[int], predictions: dict[str, Predictions], *,
                rois: dict[str, np.ndarray] | None = None, n_boot: int = 1000, n_perm: int = 1000,
                level: float = 0.95, q: float = 0.05, block_trs: int | None = None, seed: int = 0,
                per_output_ci: bool = False) -> StudyStats:
    """Every model's scores on the held-out samples with block-bootstrap intervals and permutation tests.

    Args:
        study: the study.
        runs: the held-out samples (a split's Selection) or run indices, as for ``score``.
        predictions: model name -> run index -> ((n_TR, V) predictions, (n_TR,) valid).
        rois: ROI name -> (V,) bool; each ROI's mean r gets an interval (within cortex).
        n_boot, n_perm: bootstrap resamples and permutations (the same for every model); a short series
            with M <= n_perm + 1 distinct block arrangements uses all of them instead (exact p).
        level: interval coverage; q: the BH false discovery rate.
        block_trs: block length in TRs; default ``ceil(20 s / TR)`` for the shortest TR of the runs.
        seed: the seed of the resamples and permutations.
        per_output_ci: also give every output's interval (slower on fsaverage5: n_boot x V floats).

    Returns:
        A :class:`StudyStats`.
    """
    sel = as_selection(study, runs)
    ev = score(study, sel, predictions, teacher_name=None)            # checks the inputs; r, the ceiling
    cortex, V = study.cortex, study.study.n_outputs
    rois = dict(rois or {})
    for name, m in rois.items():
        if np.shape(m) != (V,):
            raise ValueError(f"ROI {name!r} has {np.shape(m)[0] if np.ndim(m) else 0} outputs, the study {V}")
    masks = {"cortex": cortex} | {name: np.asarray(m, bool) & cortex for name, m in rois.items()}
    tr_s = min(study.runs[i].tr_s for i in sel.runs)
    block_trs = default_block_trs(tr_s) if block_trs is None else int(block_trs)

    samples = subject_samples(study, sel, scored_masks(study, sel, predictions))
    timelines = [[ss.timeline[k] for k in sorted(ss.groups)] for ss in samples]
    n_union, positions = shared_timeline(timelines)
    rng = np.random.default_rng(seed)                                # bootstrap first, then permutations
    boot = on_timeline(block_bootstrap_counts(n_union, block_trs=block_trs, n_boot=n_boot, rng=rng), positions,
                       orders=False)
    perm = on_timeline(block_permutation_indices(n_union, block_trs=block_trs, n_perm=n_perm, rng=rng), positions,
                       orders=True)
    cols = np.flatnonzero(cortex)
    caveats, shared = _caveats(timelines, n_union, block_trs, n_perm, q, len(cols))
    labels, note = schaefer_1000_labels(study.study.space, cortex)
    data = [[ss.data[k] for k in sorted(ss.groups)] for ss in samples]
    parcel_data = [[parcel_series(d, labels) for d in row] for row in data] if labels is not None else None

    models = {}
    for name, p in predictions.items():
        preds = [[pk[k] for k in sorted(pk)] for pk in (ss.pred(p) for ss in samples)]
        series = [list(zip(pr, dr)) for pr, dr in zip(preds, data)]
        dist, per_col = group_bootstrap(series, boot, cols, masks, per_output=per_output_ci)   # (n_boot,) each
        intervals = {}
        for mname, m in masks.items():
            lo, hi = percentile_bounds(dist[mname], level)
            intervals[mname] = Interval(ev.mean(ev.r[name], m), float(lo), float(hi))
        over = rois_over = None
        if ev.reliability is not None:
            over = intervals["cortex"].scaled(ev.ceiling_mean())
            rois_over = {r: intervals[r].scaled(ev.ceiling_mean(rois[r])) for r in rois}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)             # medial wall: constant data
            r2 = np.stack([np.nanmean([r2_score(pk, dk) for pk, dk in row], axis=0) for row in series])
        r2[:, ~cortex] = np.nan
        algonauts = None
        if labels is not None:
            pseries = [[(parcel_series(pk, labels), pd) for pk, pd in zip(pr, prow)]
                       for pr, prow in zip(preds, parcel_data)]
            parcels = np.arange(1, ALGONAUTS_N_PARCELS + 1)
            has = np.isin(parcels, labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                rp = np.stack([np.nanmean([pearson_r(a, b) for a, b in row], axis=0) for row in pseries])
                est = float(np.nanmean(np.nanmean(rp[:, has], axis=1)))
            pd_dist, _ = group_bootstrap(pseries, boot, np.flatnonzero(has), {"parcels": has})
            algonauts = Interval(est, *map(float, percentile_bounds(pd_dist["parcels"], level)))
        pvals = np.full(V, np.nan)
        pvals[cols] = group_permutation_p(series, perm, cols)
        significant, adjusted = fdr_bh(pvals, q)
        r_low = r_high = None
        if per_col is not None:
            r_low, r_high = np.full(V, np.nan), np.full(V, np.nan)
            r_low[cols], r_high[cols] = percentile_bounds(per_col, level)
        models[name] = ModelStats(intervals["cortex"], {r: intervals[r] for r in rois}, over, rois_over,
                                  ev.mean(r2), algonauts, pvals, adjusted, significant, ev.subject_mean(ev.r[name]),
                                  r_low, r_high, dist["cortex"])
    ceiling = ev.ceiling_mean() if ev.reliability is not None else None
    return StudyStats(ev.study, ev.space, ev.subjects, ev.stimuli, ev.n_samples, float(tr_s), block_trs, n_boot, n_perm,
                      level, q, shared, ceiling, note, models, {r: int(masks[r].sum()) for r in rois}, caveats)


def shared_timeline(timelines: list[list[tuple[tuple[str, int], ...]]]) -> tuple[int, list[list[np.ndarray]]]:
    """One stimulus timeline for series of (stimulus, BOLD time in ms) samples, and each one's place in it.

    Args:
        timelines: subjects x presentations: each series' samples (``SubjectSamples.timeline``).

    Returns:
        The number of samples in the union of all series' samples (ordered by stimulus, in the order the
        stimuli first appear, then by time), and per series the (T_k,) positions of its samples in it.
    """
    rank = {}
    for row in timelines:
        for t in row:
            for stim, _ in t:
                rank.setdefault(stim, len(rank))
    union = sorted({key for row in timelines for t in row for key in t}, key=lambda key: (rank[key[0]], key[1]))
    where = {key: i for i, key in enumerate(union)}
    return len(union), [[np.array([where[key] for key in t], np.int64) for t in row] for row in timelines]


def _caveats(timelines: list[list[tuple]], n_union: int, block_trs: int, n_perm: int, q: float,
             n_tests: int) -> tuple[list[str], bool]:
    """The caveats of a study's intervals and p-values in words, and whether every series has one timeline."""
    series = [t for row in timelines for t in row]
    distinct = len(set(series))
    shortest = min(len(t) for t in series)
    out = []
    if distinct > 1:
        out.append(f"scored samples differ across the {len(series)} subject x presentation series ({distinct} distinct "
                   f"timelines): blocks are drawn once on the {n_union} TRs any of them has, and each series uses "
                   f"its part of each draw (identical series get identical draws)")
    if shortest < FEW_BLOCKS * block_trs:
        out.append(f"intervals from {shortest / block_trs:.1f} blocks per series ({shortest} TRs in the shortest, "
                   f"{block_trs}-TR blocks) under-cover: {FEW_BLOCKS_COVERAGE}")
    arrangements = permutation_arrangements(n_union, block_trs)
    if arrangements <= n_perm + 1:
        out.append(f"p-values are exact over all {arrangements} distinct arrangements of {n_union} TRs in "
                   f"{block_trs}-TR blocks (the unshuffled one among them; fewer than the {n_perm} permutations asked "
                   f"for), so none is below 1/{arrangements} = {1 / arrangements:.4f}, and BH at q={q} across the "
                   f"{n_tests} cortex outputs finds either none or at least "
                   f"{math.ceil(n_tests / (q * arrangements))} (k discoveries need p <= q k / {n_tests})")
    return out, distinct == 1
