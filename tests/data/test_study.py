"""Loading the demo study, and every validation error on broken copies of it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinytribe.data.study import StudyError, load_study


def test_demo_study_loads_zscored_with_teacher(demo_study):
    s = load_study(demo_study)
    assert s.warnings == []
    assert len(s.subjects) == 4 and len(s.stimuli) == 8 + 6 and len(s.runs) == 4 * (6 + 2 * 3)
    corpus = [k for k in s.stimuli if k.startswith("corpus")]   # teacher outputs, no fMRI, training only
    scanned = {r.stimulus for r in s.runs}
    assert len(corpus) == 6 and not scanned & set(corpus) and all(s.stimuli[k].teacher is not None for k in corpus)
    assert sum(s.stimuli[k].duration_s for k in corpus) >= 3 * sum(s.stimuli[k].duration_s for k in scanned) - 1
    assert set(corpus) <= set(s.study.splits["train"]) and not set(corpus) & set(s.study.splits["val"] + s.study.splits["test"])
    assert {tuple(s.stimuli[k].modalities) for k in corpus} == {("text", "audio", "video"), ("video",), ("text", "audio")}
    assert s.study.space == "fsaverage4" and s.medial_wall.shape == (5124,) and 300 < s.medial_wall.sum() < 600
    run = s.runs[0]
    assert run.fmri.dtype == np.float32 and run.fmri.shape == (25, 5124)
    np.testing.assert_allclose(run.fmri[:, s.cortex].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(run.fmri[:, s.cortex].std(0), 1.0, atol=1e-4)
    assert (run.fmri[:, s.medial_wall] == 0).all()
    np.testing.assert_allclose(run.bold_times_s, np.arange(25) * 1.49)
    t = s.stimuli["test01"].teacher
    assert t.space == "fsaverage4" and t.predictions.shape == (30, 5124) and t.teacher["id"] == "tinytribe/demo-teacher"
    np.testing.assert_array_equal(t.bold_times_s, np.arange(30) + 5.0)
    assert set(s.study.splits) == {"train", "val", "test"} and len(s.split("test")) == 4 * 2 * 3
    assert s.stimuli["radio01"].modalities == ["text", "audio"] and s.stimuli["silent01"].modalities == ["video"]
    raw = load_study(demo_study, zscore=False, teacher=False, subjects=["sub-02"])
    assert {r.subject for r in raw.runs} == {"sub-02"} and raw.stimuli["test01"].teacher is None
    with pytest.raises(StudyError, match="no split 'holdout'"):
        s.split("holdout")


def _run_path(root, subject="sub-01", stimulus="story01"):
    return root / "fmri" / subject / f"{stimulus}.npy"


def test_missing_files_are_named(broken_copy):
    (broken_copy / "features" / "story02.npz").unlink()
    with pytest.raises(StudyError, match=r"features/story02.npz: features of stimulus 'story02' missing"):
        load_study(broken_copy)


def test_missing_teacher_chunk_is_named(broken_copy):
    study = json.loads((broken_copy / "study.json").read_text())
    chunk = broken_copy / study["stimuli"]["test02"]["teacher"][0]
    chunk.unlink()
    with pytest.raises(StudyError, match=f"{chunk.name}: teacher chunk of stimulus 'test02' missing"):
        load_study(broken_copy)
    assert load_study(broken_copy, teacher=False).stimuli["test02"].teacher is None


def test_missing_run_is_skipped_with_a_warning(broken_copy):
    _run_path(broken_copy, "sub-03", "story01").unlink()
    with pytest.warns(UserWarning, match="sub-03/story01.npy: fMRI run of sub-03 on story01 missing; run skipped"):
        s = load_study(broken_copy)
    assert len(s.runs) == 47 and len(s.warnings) == 1
    with pytest.raises(StudyError, match="sub-03/story01.npy: fMRI run of sub-03 on story01 missing$"):
        load_study(broken_copy, missing_runs="error")


def test_wrong_shape_is_named(broken_copy):
    np.save(_run_path(broken_copy), np.zeros((25, 20484), np.float32))
    with pytest.raises(StudyError, match=r"sub-01/story01.npy: shape \(25, 20484\), expected \(n_TR, 5124\) for fsaverage4"):
        load_study(broken_copy)


def test_nan_count_location_and_policies(broken_copy):
    a = np.load(_run_path(broken_copy))
    cortex = ~np.load(broken_copy / "medial_wall.npy")
    v = np.flatnonzero(cortex)[:3]
    a[4, v] = np.nan
    a[17, v[0]] = np.inf
    a[:, ~cortex] = np.nan  # NaN on the medial wall is normal and ignored
    np.save(_run_path(broken_copy), a)
    with pytest.raises(StudyError, match=rf"4 NaN/Inf values in 2 TRs \(TR 4, 17\) and 3 vertices \(first: {v[0]}\); "
                                         r"load with nan_policy='drop' or 'interpolate'"):
        load_study(broken_copy)
    with pytest.warns(UserWarning, match="dropped 2 TRs"):
        dropped = load_study(broken_copy, nan_policy="drop", teacher=False)
    run = next(r for r in dropped.runs if r.path.name == "story01.npy" and r.subject == "sub-01")
    assert run.fmri.shape[0] == 23 and 4 * 1.49 not in run.bold_times_s.round(2).tolist()
    with pytest.warns(UserWarning, match="interpolated"):
        filled = load_study(broken_copy, nan_policy="interpolate", teacher=False, zscore=False)
    run = next(r for r in filled.runs if r.path.name == "story01.npy" and r.subject == "sub-01")
    assert np.isfinite(run.fmri).all() and run.fmri.shape[0] == 25
    np.testing.assert_allclose(run.fmri[4, v[1]], (a[3, v[1]] + a[5, v[1]]) / 2, rtol=1e-5)


def test_length_mismatch_says_by_how_much(broken_copy):
    np.save(_run_path(broken_copy), np.load(_run_path(broken_copy))[:5])
    with pytest.raises(StudyError, match=r"5 TRs cover 7.\d s of BOLD, the stimulus 'story01' lasts 30.0 s: "
                                         r"22.\d s shorter, beyond the 20 s tolerance"):
        load_study(broken_copy)
    assert len(load_study(broken_copy, length_tolerance_s=25.0).runs) == 48


def test_bad_medial_wall_and_bad_keys(broken_copy):
    np.save(broken_copy / "medial_wall.npy", np.zeros(20484, bool))
    with pytest.raises(StudyError, match=r"medial_wall.npy: medial-wall mask has shape \(20484,\), expected \(5124,\)"):
        load_study(broken_copy)
    study = json.loads((broken_copy / "study.json").read_text())
    study["runs"][0]["tr"] = 2.0
    (broken_copy / "study.json").write_text(json.dumps(study))
    with pytest.raises(StudyError, match="tr"):
        load_study(broken_copy)


def test_presentations_and_repeats(demo_study):
    s = load_study(demo_study, teacher=False)
    groups = s.presentations("sub-02", s.split("test"))
    assert sorted(groups) == [0, 1, 2]
    assert [s.runs[i].stimulus for i in groups[1]] == ["test01", "test02"]
    assert s.repeats("sub-02", s.split("test")).shape == (3, 50, 5124)
    with pytest.raises(StudyError, match="sub-02 has 1 presentations"):
        s.repeats("sub-02", s.split("train"))


def test_a_listed_modality_missing_from_the_cache_is_named(story_copy):
    path = story_copy / "study.json"
    data = json.loads(path.read_text())
    data["stimuli"]["story"]["modalities"] = ["text", "audio"]
    path.write_text(json.dumps(data))
    with pytest.raises(StudyError, match=r"features/story.npz: no audio features, but study.json lists 'audio' "
                                         r"among the modalities of 'story'"):
        load_study(story_copy)


def _drifting(n=120, tr=2.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) * tr
    drift = 3.0 + 0.02 * t[:, None] * rng.standard_normal(4) + 2.0 * np.cos(2 * np.pi * t / 200.0)[:, None]
    return t, (drift + rng.standard_normal((n, 4))).astype(np.float32)


def test_linear_detrending_matches_scipy():
    from scipy.signal import detrend

    from tinytribe.data.study import detrend_run

    t, y = _drifting()
    np.testing.assert_allclose(detrend_run(y, t, "linear"), detrend(y.astype(np.float64), axis=0, type="linear"),
                               atol=1e-5)


@pytest.mark.parametrize("kind", ["polynomial", "cosine"])
def test_polynomial_and_cosine_detrending_match_nilearn_drift_models(kind):
    """The residuals of a least-squares fit on nilearn's own drift regressors (polynomial of order 3; the
    DCT basis of a 0.01 Hz high-pass)."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    from tinytribe.data.study import detrend_run

    t, y = _drifting()
    dm = make_first_level_design_matrix(t, events=None, drift_model=kind, drift_order=3, high_pass=0.01)
    X = dm.to_numpy()
    ref = y - X @ np.linalg.lstsq(X, y.astype(np.float64), rcond=None)[0]
    ours = detrend_run(y, t, kind, order=3, high_pass_hz=0.01, tr_s=2.0)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    if kind == "cosine":
        assert X.shape[1] == int(np.floor(2 * 120 * 0.01 * 2.0)) + 1      # 4 cosines + the constant


def test_load_study_detrends_before_zscoring(story_study):
    from scipy.signal import detrend

    from tinytribe.data.study import zscore_runs

    s = load_study(story_study, detrend="linear")
    raw = np.load(story_study / s.study.runs[0].fmri).astype(np.float64)
    np.testing.assert_allclose(s.runs[0].fmri, zscore_runs(detrend(raw, axis=0)), atol=1e-4)
    assert not np.allclose(load_study(story_study).runs[0].fmri, s.runs[0].fmri, atol=1e-3)
    with pytest.raises(ValueError, match="detrend must be None, 'linear', 'polynomial' or 'cosine', got 'quadratic'"):
        load_study(story_study, detrend="quadratic")


def test_cosine_detrending_keeps_the_full_grid_when_edge_trs_were_dropped():
    from nilearn.signal import create_cosine_drift

    from tinytribe.data.study import drift_regressors

    t = np.arange(120) * 2.0
    full = create_cosine_drift(0.01, t)                       # nilearn: cosines times sqrt(2 / n), then the constant
    scale = np.r_[np.full(full.shape[1] - 1, np.sqrt(2 / 120)), 1.0]
    kept = drift_regressors(t[3:], "cosine", high_pass_hz=0.01, tr_s=2.0, grid=(0.0, 120))
    np.testing.assert_allclose(kept * scale, full[3:], atol=1e-12)
    shrunk = drift_regressors(t[3:], "cosine", high_pass_hz=0.01, tr_s=2.0)   # the grid the kept TRs span
    assert shrunk.shape != kept.shape or not np.allclose(shrunk * scale, full[3:], atol=1e-3)


def test_a_file_that_is_not_an_npy_array_is_named_as_such(broken_copy):
    path = _run_path(broken_copy)
    path.write_text("subject,time,value\n1,0.0,3.2\n")
    with pytest.raises(StudyError, match=r"not a NumPy \.npy array \(it starts with b'subjec'"):
        load_study(broken_copy)
