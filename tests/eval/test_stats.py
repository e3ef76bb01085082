"""Block bootstrap, block permutation, BH-FDR, R² and the Algonauts score, checked on simulations with a
known answer and against direct computations (scipy, scikit-learn, a hand loop over parcels)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.stats import chisquare, kstest, pearsonr

from tinytribe.eval import stats as S
from tinytribe.eval.metrics import pearson_r

PHI = 0.8        # AR(1) coefficient per TR: autocorrelation ~0.5 at 3 TRs, ~0.04 at 14 TRs
BLOCK = S.default_block_trs(1.49)


def ar1(rng: np.random.Generator, n_trs: int, n_out: int, phi: float = PHI) -> np.ndarray:
    """(T, V) independent unit-variance AR(1) series."""
    e = rng.normal(size=(n_trs, n_out)) * np.sqrt(1 - phi ** 2)
    x = np.empty((n_trs, n_out))
    x[0] = rng.normal(size=n_out)
    for t in range(1, n_trs):
        x[t] = phi * x[t - 1] + e[t]
    return x


def signal_and_noise(seed: int, n_trs: int, n_out: int, a: float = 1.0):
    """data = a * s + noise, pred = s + noise', all AR(1): population r = a / sqrt(2 (a² + 1))."""
    rng = np.random.default_rng(seed)
    s = ar1(rng, n_trs, n_out)
    return s + ar1(rng, n_trs, n_out), a * s + ar1(rng, n_trs, n_out), a / np.sqrt(2 * (a * a + 1))


def test_default_block_is_20_seconds_of_trs():
    assert [S.default_block_trs(tr) for tr in (1.49, 2.0, 1.0, 0.8, 25.0)] == [14, 10, 20, 25, 1]
    with pytest.raises(ValueError, match="tr_s must be a positive number of seconds, got 0"):
        S.default_block_trs(0)


def test_resampled_r_equals_scipy_on_the_resampled_series():
    """The count-weighted r of each resample equals scipy's r on that resample's samples."""
    pred, data, _ = signal_and_noise(0, 90, 5)
    idx = S.block_bootstrap_indices(90, block_trs=10, n_boot=6, rng=np.random.default_rng(3))
    counts = S.block_bootstrap_counts(90, block_trs=10, n_boot=6, rng=np.random.default_rng(3))
    direct = [[pearsonr(pred[i, v], data[i, v])[0] for v in range(5)] for i in idx]
    np.testing.assert_allclose(S._weighted_r(pred, data, counts), direct, atol=1e-12)
    runs = np.diff(idx, axis=1) % 90 == 1                 # consecutive samples inside blocks
    assert runs.mean() > 0.85 and (counts.sum(1) == 90).all()


def test_block_bootstrap_covers_the_true_r_and_the_iid_bootstrap_does_not():
    """AR(1) signal and noise, population r 0.5: 400 independent outputs, each its own repetition. Blocks
    of 14 TRs cover r in ~91% (block bootstraps run a little under nominal on 600 TRs); resampling single
    TRs ignores the autocorrelation and covers ~66%."""
    pred, data, rho = signal_and_noise(1, 600, 400)
    cover = {}
    for block in (BLOCK, 1):
        ci = S.block_bootstrap_ci(pred, data, block_trs=block, n_boot=500, seed=1, per_output=True)
        cover[block] = np.mean((ci.r_low <= rho) & (rho <= ci.r_high))
        assert (ci.r_low <= ci.r).mean() > 0.95 and (ci.r <= ci.r_high).mean() > 0.95
    assert 0.87 <= cover[BLOCK] <= 0.99, cover
    assert cover[1] < 0.8, cover


def test_the_mean_r_interval_covers_a_shared_signal():
    """30 outputs driven by one stimulus signal, independent noise (population r 0.392 everywhere): the
    interval of their mean r covers it in ~94 of 100 repetitions with blocks, ~73 without."""
    hits = {BLOCK: 0, 1: 0}
    rho = 1 / np.sqrt(2 * 3.25)
    for rep in range(100):
        rng = np.random.default_rng(100 + rep)
        s = ar1(rng, 300, 1)
        data, pred = s + 1.5 * ar1(rng, 300, 30), s + ar1(rng, 300, 30)
        for block in hits:
            iv = S.block_bootstrap_ci(pred, data, block_trs=block, n_boot=300, seed=rep).means["all"]
            hits[block] += iv.low <= rho <= iv.high
    assert hits[BLOCK] >= 86 and hits[1] <= 82, hits


def test_roi_means_have_their_own_intervals():
    pred, data, _ = signal_and_noise(2, 200, 50)
    pred[:, 25:] = np.random.default_rng(0).normal(size=(200, 25))   # no signal in the second half
    masks = {"signal": np.arange(50) < 25, "none": np.arange(50) >= 25}
    ci = S.block_bootstrap_ci(pred, data, block_trs=BLOCK, n_boot=300, masks=masks)
    assert ci.means["signal"].estimate == pytest.approx(np.mean(ci.r[:25]))
    assert ci.means["signal"].low > 0.3 and ci.means["none"].low < 0 < ci.means["none"].high
    with pytest.raises(ValueError, match="mask 'bad' has shape \\(3,\\), expected \\(50,\\)"):
        S.block_bootstrap_ci(pred, data, block_trs=BLOCK, masks={"bad": np.ones(3, bool)})
    with pytest.raises(ValueError, match="200 samples hold fewer than 2 blocks of block_trs=150"):
        S.block_bootstrap_ci(pred, data, block_trs=150)


def test_permutation_p_is_the_formula_on_scipy_r():
    """p = (1 + #{null r >= r}) / (1 + n_perm), the null being scipy's r of the block-permuted prediction."""
    pred, data, _ = signal_and_noise(3, 80, 4, a=0.3)
    p = S.block_permutation_p(pred, data, block_trs=8, n_perm=99, seed=5)
    orders = S.block_permutation_indices(80, block_trs=8, n_perm=99, rng=np.random.default_rng(5))
    assert sorted(orders[0]) == list(range(80)) and not (orders == np.arange(80)).all(1).all()
    for v in range(4):
        r = pearsonr(pred[:, v], data[:, v])[0]
        null = np.array([pearsonr(pred[o, v], data[:, v])[0] for o in orders])
        assert p[v] == pytest.approx((1 + np.sum(null >= r - 1e-12)) / 100)


def test_null_p_values_are_uniform_and_fdr_finds_nothing():
    """400 outputs with independent autocorrelated prediction and data: block-permutation p-values are
    uniform and BH finds (almost) nothing; permuting single TRs gives far too many small p-values."""
    rng = np.random.default_rng(4)
    pred, data = ar1(rng, 300, 400), ar1(rng, 300, 400)
    p = S.block_permutation_p(pred, data, block_trs=BLOCK, n_perm=999)
    assert kstest(p, "uniform").pvalue > 0.01
    assert 0.02 <= np.mean(p <= 0.05) <= 0.09
    assert S.fdr_bh(p, 0.05)[0].sum() <= 2
    naive = S.block_permutation_p(pred, data, block_trs=1, n_perm=999)
    assert np.mean(naive <= 0.05) > 0.2 and S.fdr_bh(naive, 0.05)[0].sum() > 10


def test_arrangements_are_counted_enumerated_and_drawn_uniformly():
    """38 TRs in 14-TR blocks: every (phase, order of pieces) pair, listed here by brute force, gives 233
    distinct orders. With n_perm >= 232 all shuffled ones come once each; with fewer, draws are uniform
    over all of them, the unshuffled one included (30 TRs in 10-TR blocks: 213 orders, 100 x 200 draws)."""
    def brute(n_trs: int, block: int) -> set[tuple[int, ...]]:
        out = set()
        for phase in range(block):
            pieces = np.split(np.arange(n_trs), [c for c in range(phase, n_trs, block) if c > 0])
            out |= {tuple(np.concatenate([pieces[j] for j in o])) for o in itertools.permutations(range(len(pieces)))}
        return out

    every = brute(38, 14)
    assert len(every) == S.permutation_arrangements(38, 14) == 233
    listed = S.block_permutation_indices(38, block_trs=14, n_perm=1000, rng=np.random.default_rng(0))
    assert listed.shape == (232, 38) and {tuple(o) for o in listed} == every - {tuple(range(38))}

    every = sorted(brute(30, 10))
    assert len(every) == S.permutation_arrangements(30, 10) == 213
    rng = np.random.default_rng(1)
    drawn = np.concatenate([S.block_permutation_indices(30, block_trs=10, n_perm=200, rng=rng) for _ in range(100)])
    where = {o: i for i, o in enumerate(every)}
    counts = np.bincount([where[tuple(o)] for o in drawn], minlength=len(every))
    assert counts[where[tuple(range(30))]] > 0 and counts.min() > 0
    assert chisquare(counts).pvalue > 0.001, counts


def test_short_series_null_p_values_are_valid():
    """Independent AR(1) prediction and data of 38 TRs (all 233 arrangements: exact p) and 60 TRs (999
    of 3,467 drawn): p <= alpha for at most about alpha of the outputs, and never below 1 / 233 at 38 TRs.
    (Leaving the unshuffled order out, at 38 TRs: p <= 0.001 for 0.3% of outputs, p <= 0.05 for 6.2%.)"""
    for n_trs, n_out in ((38, 20000), (60, 5000)):
        rng = np.random.default_rng(n_trs)
        pred, data = ar1(rng, n_trs, n_out), ar1(rng, n_trs, n_out)
        p = S.block_permutation_p(pred, data, block_trs=BLOCK, n_perm=999, seed=n_trs)
        rate = {a: float(np.mean(p <= a)) for a in (0.001, 0.005, 0.01, 0.05)}
        assert all(r <= 1.15 * a + 0.001 for a, r in rate.items()), (n_trs, rate)
        assert rate[0.05] >= 0.04, (n_trs, rate)                     # and not conservative to uselessness
        if n_trs == 38:
            assert p.min() == pytest.approx(1 / 233)


def test_few_blocks_intervals_under_cover_as_the_caveat_says():
    """The numbers the few-blocks caveat quotes: AR(1) signal and noise at 38 TRs in 14-TR blocks, 95%
    intervals cover r for ~83% of outputs, and the mean over 30 outputs sharing a signal ~75% of the time."""
    from tinytribe.eval.study_stats import FEW_BLOCKS_COVERAGE

    cover = []
    for seed in range(3):
        pred, data, rho = signal_and_noise(10 + seed, 38, 1000)
        ci = S.block_bootstrap_ci(pred, data, block_trs=BLOCK, n_boot=500, seed=seed, per_output=True)
        cover.append(np.mean((ci.r_low <= rho) & (rho <= ci.r_high)))
    hits, rho = 0, 1 / np.sqrt(2 * 3.25)
    for rep in range(200):
        rng = np.random.default_rng(1000 + rep)
        s = ar1(rng, 38, 1)
        data, pred = s + 1.5 * ar1(rng, 38, 30), s + ar1(rng, 38, 30)
        iv = S.block_bootstrap_ci(pred, data, block_trs=BLOCK, n_boot=300, seed=rep).means["all"]
        hits += iv.low <= rho <= iv.high
    assert round(100 * np.mean(cover)) == 83 and round(100 * hits / 200) == 75, (cover, hits)
    assert "83% of outputs' r (75% of a mean" in FEW_BLOCKS_COVERAGE


def test_fdr_recovers_a_known_signal():
    pred, data, _ = signal_and_noise(5, 300, 400)
    truth = np.arange(400) < 40
    pred[:, ~truth] = ar1(np.random.default_rng(6), 300, 360)          # the rest: no signal
    significant, _ = S.fdr_bh(S.block_permutation_p(pred, data, block_trs=BLOCK, n_perm=999), 0.05)
    assert significant[truth].sum() >= 38 and significant[~truth].sum() <= 3


def test_fdr_bh_matches_scipy():
    false_discovery_control = getattr(pytest.importorskip("scipy.stats"), "false_discovery_control", None)
    if false_discovery_control is None:
        pytest.skip("scipy < 1.11 has no false_discovery_control (requirements allow scipy >= 1.10)")

    rng = np.random.default_rng(7)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-3, size=30), [0.0, 1.0, 0.02, 0.02]])
    significant, adjusted = S.fdr_bh(p, 0.05)
    np.testing.assert_allclose(adjusted, false_discovery_control(p, method="bh"), atol=1e-12)
    assert (significant == (false_discovery_control(p, method="bh") <= 0.05)).all() and significant.sum() >= 30
    with_nan = np.r_[p, np.nan]
    s2, a2 = S.fdr_bh(with_nan, 0.05)                  # NaN (untested outputs) do not count in m
    assert np.isnan(a2[-1]) and not s2[-1] and (a2[:-1] == adjusted).all()
    with pytest.raises(ValueError, match="q must be in \\(0, 1\\), got 5"):
        S.fdr_bh(p, 5)
    with pytest.raises(ValueError, match="p-values must lie in \\[0, 1\\]"):
        S.fdr_bh(np.array([0.5, 1.5]))


def test_r2_matches_scikit_learn_and_is_negative_for_a_mis_scaled_prediction():
    from sklearn.metrics import r2_score

    pred, data, _ = signal_and_noise(8, 100, 6)
    np.testing.assert_allclose(S.r2_score(pred, data), r2_score(data, pred, multioutput="raw_values"), atol=1e-12)
    assert (S.r2_score(5 * data, data) < 0).all() and S.r2_score(data, data) == pytest.approx([1.0] * 6)
    assert np.isnan(S.r2_score(np.ones((10, 1)), np.zeros((10, 1)))).all()   # constant data: undefined


def test_algonauts_score_equals_a_hand_computation_on_schaefer_1000():
    """On fsaverage4 with the real Schaefer-1000 labels: average prediction and data over each parcel's
    vertices, r per parcel, mean over parcels."""
    from tinytribe.spaces import fsaverage4_indices, parcellation

    labels = np.asarray(parcellation("schaefer-1000")[0])[fsaverage4_indices()]
    rng = np.random.default_rng(9)
    shared = rng.normal(size=(40, 1))
    data = rng.normal(size=(40, 5124)) + shared
    pred = data + 2 * rng.normal(size=(40, 5124))
    score, r, note = S.algonauts_score(pred, data, "fsaverage4")
    hand = [pearsonr(pred[:, labels == k].mean(1), data[:, labels == k].mean(1))[0] for k in range(1, 1001)]
    np.testing.assert_allclose(r, hand, atol=1e-5)
    assert score == pytest.approx(np.mean(hand), abs=1e-6) and "Schaefer-1000" in note
    assert score > np.mean(pearson_r(pred, data)) + 0.1      # parcel means average the noise away
    cortex = labels > 0
    cortex[np.flatnonzero(labels == 7)] = False             # a parcel entirely off cortex: left out
    assert np.isnan(S.algonauts_score(pred, data, "fsaverage4", cortex)[1][6])
    parcels, measured = rng.normal(size=(40, 1000)), rng.normal(size=(40, 1000))   # already parcels
    direct = np.mean(pearson_r(parcels, measured))
    assert S.algonauts_score(parcels, measured, "schaefer-1000")[0] == pytest.approx(direct)
    nan, none, why = S.algonauts_score(parcels[:, :400], parcels[:, :400], "schaefer-400")
    assert np.isnan(nan) and none is None and "no Schaefer-1000 parcels in schaefer-400" in why


def test_shared_draws_are_one_for_all_series_and_separate_otherwise():
    rng = np.random.default_rng(0)
    make = lambda t: S.block_bootstrap_counts(t, block_trs=5, n_boot=3, rng=rng)  # noqa: E731
    shared = S.make_draws([[20, 20], [20, 20]], True, make)
    assert shared(0, 0) is shared(1, 1)
    own = S.make_draws([[20, 30], [20, 20]], False, make)
    assert own(0, 1).shape == (3, 30) and not np.array_equal(own(0, 0), own(1, 0))


def test_series_on_one_timeline_share_the_draws_of_their_common_samples():
    """Two series of one stimulus, the second missing TRs 20-23 and with a second stimulus the first lacks:
    one union timeline; each series reads the union's counts at its samples, and gets its own samples in
    the order the union's arrangement puts them."""
    from tinytribe.eval.study_stats import shared_timeline

    full = tuple(("a", 1000 * t) for t in range(40))
    short = tuple(k for i, k in enumerate(full) if not 20 <= i < 24) + tuple(("b", 1000 * t) for t in range(5))
    n_union, pos = shared_timeline([[full, full], [short]])
    assert n_union == 45 and (pos[0][0] == np.arange(40)).all() and (pos[1][0] == np.r_[0:20, 24:45]).all()
    rng = np.random.default_rng(0)
    counts = S.block_bootstrap_counts(45, block_trs=5, n_boot=4, rng=rng)
    draw = S.on_timeline(counts, pos, orders=False)
    assert draw(0, 0) is draw(0, 1) and (draw(1, 0) == counts[:, pos[1][0]]).all()
    orders = S.block_permutation_indices(45, block_trs=5, n_perm=4, rng=rng)
    perm = S.on_timeline(orders, pos, orders=True)
    for b in range(4):
        mine = pos[1][0][perm(1, 0)[b]]                      # back to union positions
        assert sorted(perm(1, 0)[b]) == list(range(41))
        assert (mine == [u for u in orders[b] if u in set(pos[1][0])]).all()
        assert (perm(0, 0)[b] == [u for u in orders[b] if u < 40]).all()


@pytest.fixture(scope="module")
def demo(demo_study):
    from tinytribe.data.study import load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.eval.rois import named_rois
    from tinytribe.eval.study_stats import study_stats

    study = load_study(demo_study)
    runs = study.split("test")
    teacher = E.teacher_predictions(study, runs)
    rng = np.random.default_rng(0)
    noise = {i: (rng.normal(size=p.shape).astype(np.float32), v) for i, (p, v) in teacher.items()}
    noisier = {i: (p + p.std(0) * rng.normal(size=p.shape).astype(np.float32), v) for i, (p, v) in teacher.items()}
    # independent of the data but autocorrelated like BOLD: one AR(1) series per run and output, fixed seeds
    ar_null = {i: (ar1(np.random.default_rng(1000 + i), *p.shape).astype(np.float32), v)
               for i, (p, v) in teacher.items()}
    preds = {"teacher": teacher, "noise": noise, "teacher+noise": noisier, "AR(1) null": ar_null}
    rois = {k: v for k, v in named_rois("fsaverage4").items() if k in ("early visual", "auditory")}
    stats = study_stats(study, runs, preds, rois=rois, n_boot=200, n_perm=300)   # 300 >= 232: exact p
    return study, runs, preds, rois, stats, E.score(study, runs, preds, teacher_name=None)


def test_study_stats_on_the_demo_study(demo):
    study, runs, preds, rois, stats, ev = demo
    assert stats.block_trs == 14 and stats.tr_s == 1.49 and stats.shared_timeline and stats.n_samples == 38
    t = stats.models["teacher"]
    for name in ("teacher", "noise"):                      # point estimates are score()'s
        m = stats.models[name]
        assert m.mean_r.estimate == pytest.approx(ev.mean(ev.r[name]))
        for roi, mask in rois.items():
            assert m.rois[roi].estimate == pytest.approx(ev.mean(ev.r[name], mask))
            assert m.rois_over_ceiling[roi].high == pytest.approx(m.rois[roi].high / ev.ceiling_mean(mask))
        for iv in [m.mean_r, m.r_over_ceiling, m.algonauts, *m.rois.values()]:
            assert np.isfinite([iv.low, iv.high]).all() and iv.low <= iv.estimate <= iv.high
    assert t.r_over_ceiling.estimate == pytest.approx(ev.mean(ev.r["teacher"]) / ev.ceiling_mean())
    assert np.isnan(S.Interval(0.2, 0.1, 0.3).scaled(0.0).estimate)       # no ceiling: no ratio
    assert t.mean_r.low > 0.1 and stats.models["noise"].mean_r.low < 0 < stats.models["noise"].mean_r.high
    assert np.isnan(t.p[study.medial_wall]).all() and t.p[study.cortex].min() == pytest.approx(1 / 233)
    assert t.n_significant > 200 and stats.models["noise"].n_significant <= 5
    assert t.n_significant == int(t.significant.sum())
    few, floor = stats.caveats                             # one timeline: no caveat about differing ones
    assert few.startswith("intervals from 2.7 blocks per series (38 TRs in the shortest, 14-TR blocks) under-cover")
    assert floor.startswith("p-values are exact over all 233 distinct arrangements of 38 TRs in 14-TR blocks")
    assert "BH at q=0.05 across the 4690 cortex outputs finds either none or at least 403" in floor
    assert stats.to_dict()["caveats"] == stats.caveats and f"caveat: {few}" in stats.table()


def test_contrasts_are_paired(demo):
    """teacher - (teacher + independent noise): the two models' resamples move together, so the paired
    interval is clearly above 0 and far narrower than either model's own interval; a model minus itself
    is exactly 0."""
    _, _, _, _, stats, ev = demo
    a, b = stats.models["teacher"], stats.models["teacher+noise"]
    assert a.boot_mean.shape == (200,) and np.isfinite(a.boot_mean).all() and "boot_mean" not in a.to_dict()
    c = stats.contrast("teacher", "teacher+noise")
    assert c.estimate == pytest.approx(ev.mean(ev.r["teacher"]) - ev.mean(ev.r["teacher+noise"]))
    assert c.low > 0.02 and c.low <= c.estimate <= c.high
    assert c.high - c.low < 0.4 * min(a.mean_r.high - a.mean_r.low, b.mean_r.high - b.mean_r.low), (c, a, b)
    assert stats.contrast("noise", "noise") == S.Interval(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="contrast: no model 'student'; the models are 'teacher', 'noise'"):
        stats.contrast("teacher", "student")


def test_an_autocorrelated_null_prediction_finds_nothing(demo):
    """An AR(1) prediction independent of the data: with 14-TR blocks its p-values are close to uniform
    and BH finds nothing; permuting single TRs gives p <= 0.05 for 11% of outputs (checked by breaking it)."""
    study, _, _, _, stats, _ = demo
    null = stats.models["AR(1) null"]
    p = null.p[study.cortex]
    assert null.n_significant == 0
    rate = np.mean(p <= 0.05), np.mean(p <= 0.01)
    assert 0.03 <= rate[0] <= 0.07 and rate[1] <= 0.015, rate
    assert null.mean_r.low < 0.005 and stats.models["noise"].n_significant == 0


def test_study_stats_resamples_the_shared_timeline_once(demo):
    """Every subject and presentation of the demo has one timeline: study_stats' resampled cortex mean r
    is group_bootstrap's with one set of ``block_trs`` blocks for all series (the seed's first draws)."""
    study, runs, preds, _, stats, _ = demo
    from tinytribe.eval.evaluate import scored_masks, subject_samples

    samples = subject_samples(study, runs, scored_masks(study, runs, preds))
    counts = S.block_bootstrap_counts(38, block_trs=stats.block_trs, n_boot=200, rng=np.random.default_rng(0))
    cols = np.flatnonzero(study.cortex)
    series = [[(ss.pred(preds["teacher"])[k], ss.data[k]) for k in sorted(ss.groups)] for ss in samples]
    dist, _ = S.group_bootstrap(series, lambda s, k: counts, cols, {"cortex": study.cortex})
    np.testing.assert_allclose(stats.models["teacher"].boot_mean, dist["cortex"], rtol=0, atol=1e-12)


def test_a_subject_missing_trs_still_shares_the_draws(demo):
    """One presentation of one subject loses its last 3 scored TRs: the series are on one timeline still
    (a caveat says they differ), so the teacher's resampled means move with those of the full timeline and
    its interval keeps its width (independent draws per series make it ~3x narrower: 12 series)."""
    study, runs, preds, _, stats, _ = demo
    from tinytribe.eval.study_stats import study_stats

    first = runs.runs[0]
    teacher = dict(preds["teacher"])
    valid = teacher[first][1] & runs.mask(first)
    valid[np.flatnonzero(valid)[-3:]] = False
    teacher[first] = (teacher[first][0], valid)
    cut = study_stats(study, runs, {"teacher": teacher}, n_boot=200, n_perm=20)
    assert not cut.shared_timeline and cut.caveats[0].startswith(
        "scored samples differ across the 12 subject x presentation series (2 distinct timelines)")
    a, b = cut.models["teacher"], stats.models["teacher"]
    assert np.corrcoef(a.boot_mean, b.boot_mean)[0, 1] > 0.9
    assert 0.8 < (a.mean_r.high - a.mean_r.low) / (b.mean_r.high - b.mean_r.low) < 1.25


def test_study_stats_r2_and_algonauts_match_direct_computations(demo):
    study, runs, preds, _, stats, ev = demo
    from tinytribe.eval.evaluate import scored_masks, subject_samples

    samples = subject_samples(study, runs, scored_masks(study, runs, preds))
    r2, alg = [], []
    for ss in samples:
        pk = ss.pred(preds["teacher"])
        with np.errstate(invalid="ignore", divide="ignore"):
            r2.append(np.nanmean([S.r2_score(pk[k], ss.data[k])[study.cortex] for k in ss.groups], axis=0).mean())
        per = [S.algonauts_score(pk[k], ss.data[k], "fsaverage4", study.cortex)[1] for k in ss.groups]
        alg.append(np.nanmean(np.mean(per, axis=0)))
    assert stats.models["teacher"].r2_mean == pytest.approx(np.mean(r2))
    assert stats.models["teacher"].algonauts.estimate == pytest.approx(np.mean(alg))
    text = json.dumps(stats.to_dict(per_output=True), allow_nan=False)
    assert '"n_significant"' in text and len(json.loads(text)["models"]["teacher"]["p"]) == 5124
    assert "teacher" in stats.table() and "FDR discoveries" in stats.table()


def test_group_resamples_equal_a_direct_loop_on_the_demo_series(demo):
    """Every subject and presentation resampled with the same blocks: each resample's group mean r (over
    presentations, then cortex outputs, then subjects) equals numpy on the resampled rows."""
    study, runs, preds, rois, _, _ = demo
    from tinytribe.eval.evaluate import scored_masks, subject_samples

    samples = subject_samples(study, runs, scored_masks(study, runs, preds))
    series = [[(ss.pred(preds["teacher"])[k], ss.data[k]) for k in sorted(ss.groups)] for ss in samples]
    idx = S.block_bootstrap_indices(38, block_trs=14, n_boot=8, rng=np.random.default_rng(2))
    draw = S.make_draws([[38] * 3] * 4, True, lambda t: S.block_bootstrap_counts(t, block_trs=14, n_boot=8,
                                                                               rng=np.random.default_rng(2)))
    cols = np.flatnonzero(study.cortex)
    masks = {"cortex": study.cortex, "auditory": rois["auditory"] & study.cortex}
    dist, per_col = S.group_bootstrap(series, draw, cols, masks, per_output=True)
    for b, i in enumerate(idx):
        r = np.array([np.mean([pearson_r(p[i], d[i]) for p, d in row], axis=0) for row in series])   # (S, V)
        for name, m in masks.items():
            assert dist[name][b] == pytest.approx(np.mean(np.mean(r[:, m], axis=1)), abs=1e-10)
        np.testing.assert_allclose(per_col[b], r[:, cols].mean(0), atol=1e-10)
