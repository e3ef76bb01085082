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
    student = E.student_predictions(study, runs[:6], model, n_trs=10)  # several windows per run
    whole = E.student_predictions(study, runs[:6], model, n_trs=100)
    assert all(student[i][0].shape == study.runs[i].fmri.shape for i in runs[:6])
    ev = E.score(study, runs, {"student": E.student_predictions(study, runs, model), "teacher": preds["teacher"]})
    assert np.isfinite(ev.agreement["student"][:, study.cortex]).mean() > 0.9
    maps = E.student_modality_maps(study, runs, model, E.student_predictions(study, runs, model))
    assert set(maps) == {"text", "audio", "video"} and maps["video"].shape == (5124,)
    assert np.isfinite(whole[runs[0]][0]).all()


def test_without_repeats_the_reference_is_inter_subject(study):
    runs = study.split("train")
    ev = E.score(study, runs, {"teacher": E.teacher_predictions(study, runs)})
    assert ev.ceiling is None and "inter-subject" in ev.r and "reference" in ev.ceiling_kind


def test_bad_inputs_say_what_was_expected(study, teacher_eval):
    runs, preds, _ = teacher_eval
    p = dict(preds["teacher"])
    i = runs[0]
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
