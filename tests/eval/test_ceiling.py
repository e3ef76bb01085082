"""The noise ceiling: split-half + Spearman-Brown against a known reliability, and against the demo
study's true ceilings. Pearson r against scipy."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe.eval.ceiling import inter_subject_predictivity, noise_ceiling, pooled_ceiling, split_half_reliability
from tinytribe.eval.metrics import pearson_r, pearson_r_torch


def test_pearson_matches_scipy():
    import torch
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((50, 7)), rng.standard_normal((50, 7))
    b[:, 0] += 2 * a[:, 0]
    ref = [pearsonr(a[:, j], b[:, j])[0] for j in range(7)]
    np.testing.assert_allclose(pearson_r(a, b), ref, rtol=1e-10)
    np.testing.assert_allclose(pearson_r_torch(torch.from_numpy(a), torch.from_numpy(b)).numpy(), ref, rtol=1e-10)
    assert np.isnan(pearson_r(np.ones((5, 1)), rng.standard_normal((5, 1)))[0])
    with pytest.raises(ValueError, match="shapes differ"):
        pearson_r(a, b[:10])


@pytest.mark.parametrize("repeats", [2, 3, 4, 6])
def test_split_half_recovers_a_known_reliability(repeats):
    rng = np.random.default_rng(repeats)
    T, rel = 20000, np.array([0.1, 0.3, 0.6, 0.9])
    signal = rng.standard_normal((T, 4))
    runs = np.stack([signal + np.sqrt((1 - rel) / rel) * rng.standard_normal((T, 4)) for _ in range(repeats)])
    np.testing.assert_allclose(split_half_reliability(runs), rel, atol=0.02)
    np.testing.assert_allclose(noise_ceiling(runs), np.sqrt(rel), atol=0.02)
    with pytest.raises(ValueError, match="repeats >= 2"):
        split_half_reliability(runs[:1])


def test_inter_subject_predictivity_is_r_with_the_others_mean():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3, 40, 5))
    isp = inter_subject_predictivity(data)
    np.testing.assert_allclose(isp[0], pearson_r(data[0], (data[1] + data[2]) / 2))


def test_demo_ceiling_estimate_agrees_with_the_truth(demo_study):
    """Tolerance (stated in the docs): over responsive vertices, mean bias within 0.05 and median
    absolute error below 0.08; over unresponsive cortex (true ceiling 0), mean estimate below 0.2 (the
    estimate is a clipped square root of a noisy correlation over 50 TRs, so it is never negative)."""
    from tinytribe.data.study import load_study

    s = load_study(demo_study, teacher=False)
    true = np.load(demo_study / "truth" / "ceiling.npy")
    for si, subject in enumerate(s.subjects):
        est = noise_ceiling(s.repeats(subject, s.split("test")))
        responsive = true[si] > 0
        err = est[responsive] - true[si][responsive]
        assert abs(err.mean()) < 0.05 and np.median(np.abs(err)) < 0.08, subject
        assert est[~responsive & s.cortex].mean() < 0.2, subject


def test_pooled_ceiling_recovers_a_known_ceiling_on_short_repeats():
    """10 subjects, 2 repeats of 60 TRs, every output with true ceiling 0.514 (reliability 0.264).
    Single-subject reliabilities scatter widely; averaging their clipped square roots reads low
    (about 0.494 here), the square root of the pooled reliability does not (0.510: the small rest is
    Pearson r's own small-sample bias). 2,000 outputs make the comparison deterministic."""
    rng = np.random.default_rng(0)
    S, T, V, ceiling = 10, 60, 2000, 0.514
    rel = ceiling**2
    reliabilities = []
    for _ in range(S):
        signal = rng.standard_normal((T, V))
        runs = np.stack([signal + np.sqrt((1 - rel) / rel) * rng.standard_normal((T, V)) for _ in range(2)])
        reliabilities.append(split_half_reliability(runs))
    reliabilities = np.array(reliabilities)
    assert reliabilities.min() < -0.1 and reliabilities.max() > 0.55           # noisy, as in real short repeats
    pooled = pooled_ceiling(reliabilities)
    assert pooled.shape == (V,) and abs(pooled.mean() - ceiling) < 0.008
    mean_of_roots = np.sqrt(np.clip(reliabilities, 0, None)).mean()
    assert mean_of_roots < ceiling - 0.012                                     # the old summary's bias
    nan_col = np.full((S, 1), np.nan)
    assert np.isnan(pooled_ceiling(nan_col)).all()
