"""Evaluation on the demo study, checked against direct scipy and himalaya computations."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe.data.study import load_study
from tinytribe.eval import evaluate as E
from tinytribe.eval.metrics import resample
from tinytribe.eval.ridge import RidgeConfig, fit_predict
from tinytribe.eval.rois import named_rois, roi_means, rois_from_annot, rois_from_labels, schaefer_vector


@pytest.fixture(scope="module")
def study(demo_study):
    return load_study(demo_study)


@pytest.fixture(scope="module")
def teacher_eval(study):
    runs = study.split("test")
    preds = {"teacher": E.teacher_predictions(study, runs)}
    return runs, preds, E.score(study, runs, preds)


def test_resample_is_an_overlap_weighted_mean():
    values = np.arange(10.0)[:, None]                     # 1 Hz rows at 5..14 s
    out, ok = resample(values, np.arange(5.0, 15.0), 1.0, np.array([4.0, 5.0, 6.5]), 1.5)
    assert list(ok) == [False, True, True]               # [4, 5.5) is half outside the rows
    np.testing.assert_allclose(out[1:, 0], [(1.0 * 0 + 0.5 * 1) / 1.5, (0.5 * 1 + 1.0 * 2) / 1.5])


def test_teacher_scores_match_scipy(study, teacher_eval):
    from scipy.stats import pearsonr

    runs, preds, ev = teacher_eval
    assert ev.ceiling is not None and ev.n_samples == 38 and ev.stimuli == ["test01", "test02"]
    si, s = 1, ev.subjects[1]
    verts = np.flatnonzero(study.cortex)[[0, 500, 2000, 4000]]
    for v in verts:
        per_rep = []
        for rep in range(3):
            ids = sorted((i for i in runs if study.runs[i].subject == s and study.runs[i].repeat == rep),
                         key=lambda i: study.runs[i].stimulus)
            y = np.concatenate([study.runs[i].fmri[preds["teacher"][i][1], v] for i in ids])
            p = np.concatenate([preds["teacher"][i][0][preds["teacher"][i][1], v] for i in ids])
            per_rep.append(pearsonr(p.astype(np.float64), y.astype(np.float64))[0])
        assert ev.r["teacher"][si, v] == pytest.approx(np.mean(per_rep), abs=1e-9)
    assert np.isnan(ev.r["teacher"][:, study.medial_wall]).all()
    manual = np.mean([np.nanmean(ev.r["teacher"][k, study.cortex]) for k in range(4)])
    assert ev.mean(ev.r["teacher"]) == pytest.approx(manual)


def test_ridge_matches_a_direct_himalaya_fit(study):
    from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = [i for i in study.split("train") if study.runs[i].subject == "sub-02"]
    test = [i for i in study.split("test") if study.runs[i].subject == "sub-02"][:2]
    config = RidgeConfig(n_iter=5, n_folds=3, backend="numpy")
    ours = fit_predict(study, train, test, config)

    def design(i):  # written out independently: TR means of 2 Hz steps, then 0..6 TR delays, per modality
        run = study.runs[i]
        fc = study.stimuli[run.stimulus].features
        blocks = []
        for m in ("text", "audio", "video"):
            x = fc.features[m].astype(np.float64) * fc.masks[m][:, None]
            tr = np.zeros((len(run.bold_times_s), x.shape[1]))
            for k, tau in enumerate(run.bold_times_s):
                for step in range(fc.n_steps):
                    a, b = step / 2, step / 2 + 0.5
                    overlap = max(0.0, min(b, tau + run.tr_s) - max(a, tau))
                    tr[k] += overlap / run.tr_s * x[step]
            blocks.append(np.concatenate([np.vstack([np.zeros((d, tr.shape[1])), tr[:len(tr) - d]])
                                          for d in range(7)], axis=1))
        return np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks]

    Xs = [design(i) for i in train]
    widths = Xs[0][1]
    X = np.concatenate([x for x, _ in Xs])
    Y = np.concatenate([study.runs[i].fmri for i in train]).astype(np.float64)
    groups = np.concatenate([np.full(study.runs[i].fmri.shape[0], i) for i in train])
    runs = np.unique(groups)
    cv = [(np.flatnonzero(~np.isin(groups, runs[f::3])), np.flatnonzero(np.isin(groups, runs[f::3]))) for f in range(3)]
    edges = np.cumsum([0] + widths)
    ker = ColumnKernelizer([(m, Kernelizer(kernel="linear"), slice(edges[k], edges[k + 1]))
                            for k, m in enumerate(("text", "audio", "video"))])
    direct = make_pipeline(StandardScaler(with_std=False), ker, MultipleKernelRidgeCV(
        kernels="precomputed", cv=cv, random_state=0,
        solver_params={"n_iter": 5, "alphas": np.logspace(-2, 8, 21), "progress_bar": False}))
    direct.fit(X, Y)
    for i in test:
        np.testing.assert_allclose(ours.predictions[i], direct.predict(design(i)[0]), rtol=1e-4, atol=1e-5)
    assert ours.delays_s == pytest.approx([k * 1.49 for k in range(7)])
    assert ours.split_predictions[test[0]].shape == (3, 25, 5124)


def test_student_predictions_agreement_and_modality_maps(study, teacher_eval):
    from tinytribe.model import create_model

    runs, preds, _ = teacher_eval
    model = create_model("tiny-tribe-demo")
    first = runs.runs[:6]
    student = E.student_predictions(study, first, model, n_trs=10)  # several windows per run
    whole = E.student_predictions(study, first, model, n_trs=100)
    assert all(student[i][0].shape == study.runs[i].fmri.shape for i in first)
    ev = E.score(study, runs, {"student": E.student_predictions(study, runs, model), "teacher": preds["teacher"]})
    assert np.isfinite(ev.agreement["student"][:, study.cortex]).mean() > 0.9
    maps = E.student_modality_maps(study, runs, model, E.student_predictions(study, runs, model))
    assert set(maps) == {"text", "audio", "video"} and maps["video"].shape == (5124,)
    assert np.isfinite(whole[first[0]][0]).all()


def test_without_repeats_the_reference_is_inter_subject(study):
    runs = study.split("train")
    ev = E.score(study, runs, {"teacher": E.teacher_predictions(study, runs)})
    assert ev.ceiling is None and ev.reliability is None and "reference" in ev.ceiling_kind
    assert list(ev.r) == ["teacher"] and list(ev.reference) == ["inter-subject"]   # a reference, not a model
    table = ev.table()
    assert "inter-subject (reference)" in table and "ceiling (pooled)" not in table


def test_the_table_aligns_long_model_names(study, teacher_eval):
    runs, preds, _ = teacher_eval
    long = "student, phase 1 -> 2 -> 3 (best by val r)"
    ev = E.score(study, runs, {long: preds["teacher"], "teacher": preds["teacher"]})
    lines = ev.table(named_rois("fsaverage4")).splitlines()
    head = lines[1]
    row = next(line for line in lines if line.startswith(long))
    assert row.index(long) + len(long) < head.index("mean r")              # the name ends before the numbers
    assert len(row) == len(next(line for line in lines if line.startswith("teacher")))
    roi_head = next(line for line in lines if line.startswith("ROI"))
    roi_row = next(line for line in lines if line.startswith("early visual"))
    assert len(roi_head) == len(roi_row) and roi_head.endswith("ceiling")


def test_a_held_out_time_range_is_scored_alone(story_study):
    """Scores on the story's held-out last fifth equal scipy's r on exactly those samples; the pooled
    ceiling is the square root of the mean reliability over subjects."""
    from scipy.stats import pearsonr

    from tinytribe.eval.ridge import RidgeConfig

    s = load_study(story_study)
    test = s.split("test")
    preds, _ = E.ridge_predictions(s, s.split("train"), test, RidgeConfig(bands=("word_rate",), n_iter=3))
    ev = E.score(s, test, {"word rate": preds})
    assert ev.n_samples == int(test.mask(0).sum()) < s.runs[0].fmri.shape[0]
    i0, i1 = [i for i in test if s.runs[i].subject == "sub-02"]
    for k in range(6):
        rs = [pearsonr(preds[i][0][test.mask(i), k].astype(np.float64),
                       s.runs[i].fmri[test.mask(i), k].astype(np.float64))[0] for i in (i0, i1)]
        assert ev.r["word rate"][1, k] == pytest.approx(np.mean(rs), abs=1e-9)
    rel = [pearsonr(s.runs[a].fmri[test.mask(a), 0].astype(np.float64), s.runs[b].fmri[test.mask(b), 0].astype(np.float64))[0]
           for a, b in (sorted(i for i in test if s.runs[i].subject == subj) for subj in s.subjects)]
    assert ev.ceiling_map()[0] == pytest.approx(np.sqrt(max(np.mean(rel), 0)), abs=1e-9)
    assert ev.ceiling_mean() == pytest.approx(np.nanmean(ev.ceiling_map()))


def test_bad_inputs_say_what_was_expected(study, teacher_eval):
    runs, preds, _ = teacher_eval
    p = dict(preds["teacher"])
    i = runs.runs[0]
    r = study.runs[i]
    p[i] = (p[i][0][:10], p[i][1][:10])
    with pytest.raises(ValueError, match=f"teacher on {r.subject}/{r.stimulus}: predictions have 10 samples, the data 25"):
        E.score(study, runs, {"teacher": p})
    p = {k: (np.zeros((v[0].shape[0], 20484), np.float32), v[1]) for k, v in preds["teacher"].items()}
    with pytest.raises(ValueError, match="predictions have 20484 outputs, the study is fsaverage4 .5124.: map them"):
        E.score(study, runs, {"x": p})
    with pytest.raises(ValueError, match="no predictions for run"):
        E.score(study, runs, {"x": {i: preds["teacher"][i]}})
    bad = dict(preds["teacher"])
    bad[i] = (np.full_like(bad[i][0], np.nan), bad[i][1])
    with pytest.raises(ValueError, match="NaN/Inf in predictions"):
        E.score(study, runs, {"x": bad})
    with pytest.raises(ValueError, match=r"label vector has shape \(100,\), expected \(5124,\) for fsaverage4"):
        rois_from_labels(np.zeros(100, int), space="fsaverage4")
    with pytest.raises(ValueError, match="ROI 'early visual' has 20484 vertices, the values 5124"):
        roi_means(np.zeros(5124), named_rois("fsaverage5"))


def test_rois_on_both_meshes_and_user_atlases():
    from tinytribe.spaces import ATLAS_DIR

    r5, r4 = named_rois("fsaverage5"), named_rois("fsaverage4")
    assert r5["early visual"].sum() > 4 * r4["early visual"].sum() * 0.8 and r4["auditory"].sum() > 50
    assert (r5["default mode"] == r5["Yeo 7 default"]).all() and len(r5) == 3 + 1 + 7
    user = rois_from_labels(np.r_[np.ones(10), np.zeros(5114)].astype(int), {1: "mine"}, space="fsaverage4")
    assert user["mine"].sum() == 10
    sch = rois_from_annot(ATLAS_DIR / "lh.schaefer_400.annot", ATLAS_DIR / "rh.schaefer_400.annot", "fsaverage4")
    assert len(sch) == 400
    vec = schaefer_vector(np.ones(5124), "fsaverage4")
    assert vec.shape == (400,) and np.nanmax(np.abs(vec - 1)) < 1e-6


def test_rois_and_tables_for_parcel_and_custom_spaces(tmp_path):
    import csv

    from tinytribe.eval.rois import rois_for_space
    from tinytribe.spaces import load_atlas, on_fsaverage5

    nets = rois_for_space("schaefer-400")
    seven = [m for name, m in nets.items() if name.startswith("Yeo ")]
    assert len(seven) == 7 and (np.sum(seven, axis=0) == 1).all()            # every parcel in one network
    assert (nets["default mode"] == nets["Yeo 7 default"]).all() and nets["Yeo 1 visual"].sum() > 20
    custom = rois_for_space("custom:3", ["A1", "IFG", "PCC"])
    assert list(custom) == ["A1", "IFG", "PCC"] and custom["IFG"].tolist() == [False, True, False]
    assert list(rois_for_space("custom:2")) == ["output 1", "output 2"]
    with pytest.raises(ValueError, match="2 output names for the 3 outputs of custom:3"):
        rois_for_space("custom:3", ["a", "b"])

    values = np.arange(400, dtype=np.float64)
    painted = on_fsaverage5(values, "schaefer-400")
    labels, _ = load_atlas("schaefer-400")
    assert painted.shape == (20484,) and np.isnan(painted[labels == 0]).all()
    np.testing.assert_array_equal(painted[labels > 0], labels[labels > 0] - 1)

    rng = np.random.default_rng(0)
    rel = rng.uniform(0.0, 0.5, (2, 400))
    ev = E.Evaluation("x", "schaefer-400", ["s1", "s2"], ["a"], 10, np.ones(400, bool),
                      {"ridge": rng.uniform(-0.1, 0.5, (2, 400))}, rel, "test")
    rows = E.save_parcel_table(ev, tmp_path / "parcels.csv")
    with open(tmp_path / "parcels.csv") as f:
        read = list(csv.DictReader(f))
    assert len(read) == 400 and read[0]["parcel"] == "7Networks_LH_Vis_1" and set(read[0]) == {"parcel", "ridge", "ceiling"}
    assert float(read[5]["ceiling"]) == pytest.approx(np.sqrt(rel[:, 5].mean()), abs=1e-4)
    assert rows[5]["ridge"] == pytest.approx(ev.r["ridge"][:, 5].mean())


def test_the_ceiling_pairs_repeats_by_time_when_trs_were_dropped(story_copy):
    """Two repeats that lost different TRs have the same length but are shifted: the ceiling uses the
    sample times both have, not positions."""
    import warnings

    from scipy.stats import pearsonr

    for rep, trs in ((0, [170, 171, 172]), (1, [175, 176, 177])):
        path = story_copy / f"fmri/sub-01/story_rep-{rep}.npy"
        y = np.load(path)
        y[trs, 2] = np.nan
        np.save(path, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        s = load_study(story_copy, nan_policy="drop")
    test = s.split("test")
    a, b = [i for i in test if s.runs[i].subject == "sub-01"]
    ev = E.score(s, test, {"zero": {i: (np.random.default_rng(i).standard_normal(s.runs[i].fmri.shape).astype(np.float32),
                                        np.ones(s.runs[i].fmri.shape[0], bool)) for i in test}})
    assert (ev.n_samples, ev.n_samples_max) == (33, 36) and "33-36 TRs per presentation" in ev.table()
    ta, tb = s.runs[a].bold_times_s, s.runs[b].bold_times_s
    both = np.intersect1d(ta[test.mask(a)], tb[test.mask(b)])
    ya = s.runs[a].fmri[np.isin(ta, both)].astype(np.float64)
    yb = s.runs[b].fmri[np.isin(tb, both)].astype(np.float64)
    assert len(both) == 30
    expected = [pearsonr(ya[:, k], yb[:, k])[0] for k in range(6)]
    np.testing.assert_allclose(ev.reliability[0], expected, atol=1e-9)
    np.testing.assert_allclose(s.repeats("sub-01", test)[:, :, 0], np.stack([ya[:, 0], yb[:, 0]]), atol=1e-6)


def test_student_predictions_use_the_rows_the_model_records(study):
    """With subject keys, sub-02 of this study gets its own FiLM row even when the model was trained on
    more subjects than the study has; a subject the model never saw gets the average subject."""
    import torch

    from tinytribe.model import create_model

    model = create_model("tiny-tribe-demo", ["n_subjects=5"]).eval()
    with torch.no_grad():
        model.head.film.gamma.add_(torch.randn_like(model.head.film.gamma))
    runs = [i for i in study.split("test") if study.runs[i].subject in ("sub-02", "sub-03")][:4]
    plain = E.student_predictions(study, runs, model)                 # 5 rows, 4 subjects, no keys: average
    model.config.subject_keys = [["other", "sub-01"], ["tiny-tribe-demo", "sub-02"], ["other", "sub-03"],
                                 ["other", "sub-04"], ["other", "sub-05"]]
    keyed = E.student_predictions(study, runs, model)
    for i in runs:
        same = np.allclose(keyed[i][0], plain[i][0])
        assert same == (study.runs[i].subject == "sub-03"), study.runs[i].subject   # sub-03 is not this study's row


class _TeacherOracle:
    """Stands in for a student: called on ``windows`` in order, it returns the cached teacher rows at the
    grid's times (mapped into ``space``), so its agreement with the teacher is 1 where the grids line up."""

    def __init__(self, study, space: str, windows: list):
        import types

        self.study, self.config, self.queue = study, types.SimpleNamespace(space=space), list(windows)
        self.calls = 0

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, features, available, t0, grids, subject=None, **_):
        import types

        import torch

        from tinytribe.spaces import reduce_space

        self.calls += 1
        tc = self.study.stimuli[self.queue.pop(0).stimulus].teacher
        times = grids["teacher"].times[0].numpy()
        rows = [int(np.argmin(np.abs(tc.bold_times_s - t))) if np.isfinite(t) else 0 for t in times]
        pred = reduce_space(tc.predictions[rows].astype(np.float32), self.study.study.space, self.config.space)
        return types.SimpleNamespace(responses={"teacher": torch.from_numpy(pred)[None]}, kd={},
                                     aux={"expert_share": torch.full((2, 4), 0.25)})


def test_teacher_agreement_is_one_for_the_teacher_itself(study):
    from tinytribe.data.windows import make_stimulus_windows

    windows = make_stimulus_windows(study, "test", length_s=10.0, min_s=3.0)   # two stimuli, several windows each
    for space in (study.study.space, "schaefer-400"):
        oracle = _TeacherOracle(study, space, windows)
        a = E.teacher_agreement(study, windows, oracle, activation=None)
        assert oracle.calls == len(windows) > 1 and a.feature_cos is None
        assert a.n_rows == sum(int(round(w.end_s - w.start_s)) for w in windows)
        np.testing.assert_allclose(a.r[np.isfinite(a.r)], 1.0, atol=1e-5)
        assert np.isfinite(a.r).sum() >= 0.8 * a.r.size and a.mean() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(a.expert_share, 0.25)


def test_a_study_in_a_coarser_space_averages_its_runs(study):
    from tinytribe.data.study import in_space
    from tinytribe.spaces import reduce_space

    parcels = in_space(study, "schaefer-400")
    assert parcels.study.space == "schaefer-400" and parcels.medial_wall.shape == (400,)
    np.testing.assert_allclose(parcels.runs[0].fmri, reduce_space(study.runs[0].fmri, study.study.space, "schaefer-400"),
                               rtol=1e-6)
    assert all(s.teacher is None for s in parcels.stimuli.values()) and study.stimuli["story03"].teacher is not None
    assert in_space(study, study.study.space) is study
