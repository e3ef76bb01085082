"""The ridge baseline on a one-story ROI study: bands that follow the stimuli, word rate, FIR history
across a split boundary, per-subject and pooled fits against direct himalaya fits."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe.data.study import load_study
from tinytribe.eval.ridge import BandError, Designs, RidgeConfig, _fits, band_problems, default_bands, fit_predict


@pytest.fixture(scope="module")
def story(story_study):
    return load_study(story_study)


def _direct_design(study, run_index, text_only=False):
    """Written out independently: text features averaged over each TR, the word onsets of the story as
    generated (not as read back), every band delayed 0..5 TRs over the whole run."""
    from story_study import story_words

    run = study.runs[run_index]
    fc = study.stimuli["story"].features
    x = fc.features["text"].astype(np.float64) * fc.masks["text"][:, None]
    text = np.zeros((len(run.bold_times_s), x.shape[1]))
    for k, tau in enumerate(run.bold_times_s):
        for step in range(fc.n_steps):
            a = step / 2
            text[k] += max(0.0, min(a + 0.5, tau + 2.0) - max(a, tau)) / 2.0 * x[step]
    onsets = np.array([a for _, a, _ in story_words()[0]])
    rate = np.array([((onsets >= tau) & (onsets < tau + 2.0)).sum() / 2.0 for tau in run.bold_times_s])[:, None]
    blocks = [text] if text_only else [text, rate]
    out = []
    for b in blocks:
        out.append(np.concatenate([np.vstack([np.zeros((d, b.shape[1])), b[:len(b) - d]]) for d in range(6)], axis=1))
    return np.concatenate(out, axis=1), [o.shape[1] for o in out]


def _direct_fit(X, Y, widths, groups, n_iter):
    from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.unique(groups)
    cv = [(np.flatnonzero(~np.isin(groups, labels[f::3])), np.flatnonzero(np.isin(groups, labels[f::3])))
          for f in range(3)]
    edges = np.cumsum([0] + widths)
    ker = ColumnKernelizer([(str(k), Kernelizer(kernel="linear"), slice(edges[k], edges[k + 1]))
                            for k in range(len(widths))])
    pipe = make_pipeline(StandardScaler(with_std=False), ker, MultipleKernelRidgeCV(
        kernels="precomputed", cv=cv, random_state=0,
        solver_params={"n_iter": n_iter, "alphas": np.logspace(-2, 8, 21), "progress_bar": False}))
    return pipe.fit(X, Y)


def test_bands_follow_the_stimulus_modalities(story, demo_study):
    runs = list(range(len(story.runs)))
    assert default_bands(story, runs) == ("text",)                      # a text-only cache: no audio/video columns
    X, slices = Designs(story, ("text",), 10.0).matrix(0)
    assert X.shape == (story.runs[0].fmri.shape[0], 384 * 6) and len(slices) == 1
    assert band_problems(story, runs, ["audio", "audio_envelope", "word_rate"]) == {
        "audio": "no stimulus among story has audio", "audio_envelope": "no stimulus among story has audio"}
    with pytest.raises(BandError, match="ridge band video: no stimulus among story has video"):
        fit_predict(story, story.split("train"), story.split("test"), RidgeConfig(bands=("text", "video")))
    demo = load_study(demo_study, teacher=False)   # no transcripts: word rate from the ASR onsets in the caches
    assert band_problems(demo, demo.split("train"), ["word_rate", "audio_envelope"]) == {}
    with pytest.raises(ValueError, match="unknown ridge band 'pitch'"):
        RidgeConfig(bands=("pitch",))


def test_word_rate_band_counts_onsets_per_tr(story):
    from story_study import story_words

    values = Designs(story, ("word_rate",), 10.0).band_values(0)["word_rate"][:, 0]
    onsets = np.array([a for _, a, _ in story_words()[0]])
    direct = [((onsets >= tau) & (onsets < tau + 2.0)).sum() / 2.0 for tau in story.runs[0].bold_times_s]
    np.testing.assert_array_equal(values, direct)
    assert values.max() >= 1.5 and (values == 0).sum() > 10             # fast passages and pauses


def test_fir_history_crosses_the_split_boundary(story):
    """The first held-out sample's delayed columns hold the features of the samples before it (the end
    of the training part), not zeros as they would if each split part were delayed on its own."""
    d = Designs(story, ("word_rate",), 10.0)
    X, _ = d.matrix(0)
    rate = d.band_values(0)["word_rate"][:, 0]
    first = int(np.flatnonzero(story.split("test").mask(0))[0])
    np.testing.assert_array_equal(X[first], [rate[first - k] for k in range(6)])
    assert np.count_nonzero(X[first, 1:]) >= 2


def test_per_subject_and_pooled_fits_match_direct_himalaya_fits(story):
    train, test = story.split("train"), story.split("test")
    config = RidgeConfig(bands=("text", "word_rate"), n_iter=5, backend="numpy")
    fits = _fits(story, Designs(story, config.bands, 10.0), train, story.subjects, "subject")
    assert len(fits) == 1 and list(fits[0].targets) == story.subjects   # one design, 8 subjects' targets side by side
    ours = fit_predict(story, train, test, config)

    def rows(i):
        return train.mask(i)

    def blocks(i):  # 3 contiguous blocks of each run's training samples: one story, fewer stimuli than folds
        n = int(rows(i).sum())
        return np.arange(n) * 3 // n

    for s in ("sub-03", "sub-07"):
        tr = [i for i in train if story.runs[i].subject == s]
        X = np.concatenate([_direct_design(story, i)[0][rows(i)] for i in tr])
        Y = np.concatenate([story.runs[i].fmri[rows(i)] for i in tr]).astype(np.float64)
        direct = _direct_fit(X, Y, _direct_design(story, tr[0])[1], np.concatenate([blocks(i) for i in tr]), 5)
        for i in (i for i in test if story.runs[i].subject == s):
            np.testing.assert_allclose(ours.predictions[i], direct.predict(_direct_design(story, i)[0]),
                                       rtol=1e-4, atol=1e-5)

    pooled = fit_predict(story, train, test, RidgeConfig(bands=("text", "word_rate"), n_iter=5, backend="numpy",
                                                        pooling="mean"))
    tr = list(train)
    X, widths = _direct_design(story, tr[0])
    Y = np.mean([story.runs[i].fmri[rows(i)] for i in tr], axis=0).astype(np.float64)   # the group mean
    direct = _direct_fit(X[rows(tr[0])], Y, widths, blocks(tr[0]), 5)
    expected = direct.predict(_direct_design(story, tr[0])[0])
    for i in test:
        np.testing.assert_allclose(pooled.predictions[i], expected, rtol=1e-4, atol=1e-5)
    assert pooled.pooling == "mean" and not np.allclose(pooled.predictions[0], ours.predictions[0], atol=1e-3)


def test_word_rate_from_the_feature_cache_matches_the_transcript_band(story, story_copy):
    """The cache's onset channel, averaged onto TRs, is the word-rate band: a ridge on it alone gives the
    same predictions as a ridge on the transcript's word rate (TR 2 s: whole feature steps)."""
    import json

    data = json.loads((story_copy / "study.json").read_text())
    del data["stimuli"]["story"]["words"]
    (story_copy / "study.json").write_text(json.dumps(data))
    no_words = load_study(story_copy)
    from_cache = Designs(no_words, ("word_rate",), 10.0).band_values(0)["word_rate"]
    from_words = Designs(story, ("word_rate",), 10.0).band_values(0)["word_rate"]
    np.testing.assert_allclose(from_cache, from_words, atol=1e-12)
    config = RidgeConfig(bands=("word_rate",), n_iter=3, backend="numpy")
    a = fit_predict(story, story.split("train"), story.split("test"), config)
    b = fit_predict(no_words, no_words.split("train"), no_words.split("test"), config)
    for i in a.predictions:
        np.testing.assert_allclose(b.predictions[i], a.predictions[i], rtol=1e-6, atol=1e-8)


def _drop_trs(root, run_file, trs):
    y = np.load(root / run_file)
    y[trs, 0] = np.nan
    np.save(root / run_file, y)


def test_dropped_trs_keep_lags_in_whole_trs(story_copy):
    """After nan_policy="drop", lag d of a row still holds the band d TRs (not d rows) earlier."""
    import warnings

    _drop_trs(story_copy, "fmri/sub-01/story_rep-0.npy", [100, 101, 102])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s = load_study(story_copy, nan_policy="drop")
    run = s.runs[0]
    assert run.fmri.shape[0] == 181 and 206.0 in run.bold_times_s
    X, _ = Designs(s, ("word_rate",), 10.0).matrix(0)
    rate = Designs(s, ("word_rate",), 10.0).band_values(0, np.arange(184) * 2.0)["word_rate"][:, 0]  # full grid
    row = int(np.flatnonzero(run.bold_times_s == 206.0)[0])
    np.testing.assert_array_equal(X[row], [rate[103 - d] for d in range(6)])


def test_training_on_the_test_samples_is_refused(story):
    with pytest.raises(ValueError, match=r"ridge: training and test samples overlap: 36 test samples of "
                                         r"sub-01/story \(from 296 s\)"):
        fit_predict(story, story.select(["story"]), story.split("test"), RidgeConfig(n_iter=2))


def test_chunked_and_mixed_tr_fits(story, story_copy):
    """Fitting subjects in chunks (max_fit_bytes) changes nothing; a subject scanned at another TR is fitted
    on its own grid, and the pooled fit makes one model per TR."""
    import json

    train, test = story.split("train"), story.split("test")
    config = dict(bands=("word_rate",), n_iter=3, backend="numpy")
    whole = fit_predict(story, train, test, RidgeConfig(**config))
    chunked = fit_predict(story, train, test, RidgeConfig(**config, max_fit_bytes=1.0))   # one subject per fit
    for i in whole.predictions:
        np.testing.assert_allclose(chunked.predictions[i], whole.predictions[i], rtol=1e-6, atol=1e-8)

    data = json.loads((story_copy / "study.json").read_text())
    for r in data["runs"]:
        if r["subject"] == "sub-01":
            r["tr_s"] = 1.9
    (story_copy / "study.json").write_text(json.dumps(data))
    mixed = load_study(story_copy)
    res = fit_predict(mixed, mixed.split("train"), mixed.split("test"), RidgeConfig(**config))
    assert set(res.predictions) == set(mixed.split("test"))
    i = next(i for i in mixed.split("test") if mixed.runs[i].subject == "sub-02")
    np.testing.assert_allclose(res.predictions[i], whole.predictions[i], rtol=1e-6, atol=1e-8)  # others unchanged
    pooled = fit_predict(mixed, mixed.split("train"), mixed.split("test"), RidgeConfig(**config, pooling="mean"))
    assert set(pooled.predictions) == set(mixed.split("test"))


def test_word_rate_from_the_cache_counts_its_words_at_any_tr(demo_study):
    """The demo has no transcripts: word rate comes from the recogniser's words its caches keep, counted
    per 1.49 s TR exactly (not spread from 0.5 s steps)."""
    demo = load_study(demo_study, teacher=False)
    i = next(i for i, r in enumerate(demo.runs) if r.stimulus == "story01")
    run = demo.runs[i]
    onsets = np.array([w.onset for w in demo.stimuli["story01"].features.words])
    assert onsets.size > 20
    direct = [((onsets >= tau) & (onsets < tau + 1.49)).sum() / 1.49 for tau in run.bold_times_s]
    np.testing.assert_allclose(Designs(demo, ("word_rate",), 10.0).band_values(i)["word_rate"][:, 0], direct,
                               atol=1e-12)
