"""Windows: lead-in, no future leakage, masks, teacher grid, BOLD-time alignment within 1 ms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytribe.data.study import load_study
from tinytribe.data.windows import WindowSampler, collate, make_windows, window_item


@pytest.fixture(scope="module")
def study(demo_study):
    return load_study(demo_study)


def test_windows_cover_runs_without_overlap_or_with_stride(study):
    ws = make_windows(study, study.split("train"), n_trs=10)
    per_run = {}
    for w in ws:
        per_run.setdefault(w.run, []).append(w)
    for run, wl in per_run.items():
        covered = np.concatenate([np.arange(w.first, w.first + w.n) for w in wl])
        np.testing.assert_array_equal(covered, np.arange(study.runs[run].fmri.shape[0]))
    overlapping = make_windows(study, [0], n_trs=10, stride_trs=5)
    assert [w.first for w in overlapping] == [0, 5, 10, 15] and overlapping[-1].n == 10
    assert all(w.n == 10 for w in make_windows(study, [0], n_trs=10, min_trs=10))


def test_lead_in_and_no_future_leakage(study):
    run_i = next(i for i, r in enumerate(study.runs) if r.stimulus == "story01")
    run = study.runs[run_i]
    fc = study.stimuli["story01"].features
    w = make_windows(study, [run_i], n_trs=10)[1]  # TRs 10-19: BOLD 14.9 .. 29.8 s
    it = window_item(study, w, lead_in_s=8.0)
    bold = it["bold_times_s"]
    np.testing.assert_array_equal(bold, run.bold_times_s[10:20])       # alignment: exactly the run's times
    t_end = bold[-1] + run.tr_s
    T = it["features"]["video"].shape[0]
    assert bold[0] - 8.0 - 0.5 < it["t0"] <= bold[0] - 8.0 + 1e-3        # 8 s of lead-in, on the 2 Hz grid
    assert abs(it["t0"] * 2 - round(it["t0"] * 2)) < 2e-3
    assert it["t0"] + (T - 1) / it["rate_hz"] < t_end                    # every step starts inside the window
    assert it["t0"] + T / it["rate_hz"] >= t_end - 1e-3                  # ... and the last TR is covered in full
    i0 = int(round(it["t0"] * 2))
    np.testing.assert_array_equal(it["features"]["video"], fc.features["video"][i0:i0 + T].astype(np.float32))
    # changing the stimulus after the window changes nothing in it
    saved = fc.features["video"].copy()
    fc.features["video"][i0 + T:] = 7.0
    try:
        np.testing.assert_array_equal(window_item(study, w, lead_in_s=8.0)["features"]["video"],
                                      it["features"]["video"])
    finally:
        fc.features["video"][:] = saved
    # teacher rows on their own grid, inside the window
    assert (it["teacher_times_s"] >= bold[0]).all() and (it["teacher_times_s"] + 1.0 <= t_end + 1e-9).all()
    np.testing.assert_array_equal(it["teacher_times_s"], np.arange(15.0, 29.0))
    acts = it["teacher_act_times_s"]["fusion_l4"]
    assert acts[0] >= it["t0"] - 1e-9 and acts[-1] < t_end


def test_masks_padding_and_availability(study):
    first = next(i for i, r in enumerate(study.runs) if r.stimulus == "radio01")
    it = window_item(study, make_windows(study, [first], n_trs=10)[0], lead_in_s=16.0)
    assert list(it["available"]) == [True, True, False]        # text, audio, no video
    assert not it["masks"]["video"].any() and not it["features"]["video"].any()
    pad = int(round(-it["t0"] * 2))
    assert pad == 32 and not it["masks"]["audio"][:pad].any()  # 16 s before the stimulus: padded, masked
    assert it["masks"]["audio"][pad:].any()
    silent = next(i for i, r in enumerate(study.runs) if r.stimulus == "silent01")
    it = window_item(study, make_windows(study, [silent], n_trs=10)[0])
    assert list(it["available"]) == [False, False, True] and not it["masks"]["text"].any()


def test_collate_feeds_the_student(study):
    from tinytribe.model import create_model

    ws = make_windows(study, study.split("train"), n_trs=10)[:4]
    b = collate([window_item(study, w) for w in ws])
    assert b["features"]["video"].shape[:2] == b["masks"]["video"].shape
    assert b["fmri"].shape == (4, 10, 5124) and b["grids"]["teacher"].times.shape[0] == 4
    short = [w for w in make_windows(study, study.split("train"), n_trs=10) if w.n < 10][0]
    b2 = collate([window_item(study, ws[0]), window_item(study, short)])
    assert bool(b2["fmri_valid"][1, :short.n].all()) and not bool(b2["fmri_valid"][1, short.n:].any())
    model = create_model("tiny-tribe-demo").eval()
    with torch.no_grad():
        out = model(b2["features"], b2["available"], b2["t0"], b2["grids"], subject=b2["subject"])
    assert out.responses["fmri"].shape == (2, 10, 5124) and out.responses["teacher"].shape[0] == 2
    assert torch.isfinite(out.responses["fmri"][b2["fmri_valid"]]).all()


def test_sampler_mixes_studies_by_weight_and_resumes(study):
    ws = {"a": make_windows(study, study.split("train"), n_trs=10), "b": make_windows(study, study.split("val"), n_trs=10)}
    s = WindowSampler(ws, {"a": 3.0, "b": 1.0}, seed=7)
    draws = s.draw(2000)
    frac = np.mean([name == "a" for name, _ in draws])
    share = 3 * len(ws["a"]) / (3 * len(ws["a"]) + len(ws["b"]))   # a weight is a rate per window
    assert abs(frac - share) < 0.04 and share < 0.95
    again = WindowSampler(ws, {"a": 3.0, "b": 1.0}, seed=7)
    again.draw(1000)
    assert again.draw(1000) == draws[1000:]                  # a resumed sampler continues the same sequence
    with pytest.raises(ValueError, match="weights for unknown studies"):
        WindowSampler(ws, {"c": 1.0})


def test_windows_with_and_without_a_teacher_share_a_batch_with_activations(study, broken_copy):
    """A stimulus without teacher outputs beside one with them: per-item validity, activations carried
    with their times, and the model's KD features on those times."""
    import json

    from tinytribe.model import create_model

    path = broken_copy / "study.json"
    data = json.loads(path.read_text())
    data["stimuli"]["story02"]["teacher"] = []
    path.write_text(json.dumps(data))
    s = load_study(broken_copy)
    a = next(w for w in make_windows(s, s.split("train"), n_trs=10) if s.runs[w.run].stimulus == "story01")
    b = next(w for w in make_windows(s, s.split("train"), n_trs=10) if s.runs[w.run].stimulus == "story02")
    items = [window_item(s, a), window_item(s, b)]
    batch = collate(items)
    assert batch["has_teacher"].tolist() == [True, False]
    assert batch["teacher_valid"][0].any() and not batch["teacher_valid"][1].any()
    acts, valid = batch["teacher_acts"]["fusion_l4"], batch["teacher_acts_valid"]["fusion_l4"]
    assert acts.shape[0] == 2 and acts.shape[2] == 1152 and valid[0].sum() == items[0]["teacher_acts"]["fusion_l4"].shape[0]
    assert not valid[1].any() and batch["kd_grids"]["fusion_l4"].width_s == 0.5
    model = create_model("tiny-tribe-demo").eval()
    with torch.no_grad():
        out = model(batch["features"], batch["available"], batch["t0"], batch["grids"], batch["subject"],
                    masks=batch["masks"], kd_grids=batch["kd_grids"])
    kd = out.kd["fusion_l4"]
    assert kd.shape == (2, acts.shape[1], 1152) and torch.isfinite(kd[valid]).all()
    # the KD feature of an activation row is the mean of the model's per-step KD features over its 0.5 s
    t = batch["kd_grids"]["fusion_l4"].times[0, 3].item()
    step = int(round((t - batch["t0"][0].item()) * 2))
    torch.testing.assert_close(kd[0, 3], out.kd_features[0, step], rtol=1e-5, atol=1e-6)


@pytest.fixture
def two_studies(demo_study, broken_copy):
    """The demo study and a copy of it under another name: two studies that both have a sub-01."""
    import json

    path = broken_copy / "study.json"
    data = json.loads(path.read_text())
    data["name"] = "another-study"
    path.write_text(json.dumps(data))
    return load_study(demo_study, teacher=False), load_study(broken_copy, teacher=False)


def test_subjects_are_told_apart_by_study(two_studies):
    """Two studies that both have a sub-01 give them different FiLM rows."""
    from tinytribe.data.windows import SubjectIndex

    a, b = two_studies
    index = SubjectIndex([a, b])
    assert len(index) == 8 and index.row(a, "sub-01") == 0 and index.row(b, "sub-01") == 4
    w = make_windows(b, [0], n_trs=5)[0]
    item = window_item(b, w, subjects=index)
    assert item["subject"] == 4 + b.subjects.index(b.runs[0].subject)
    assert item["subject_key"] == ("another-study", b.runs[0].subject)
    assert window_item(b, w)["subject"] == b.subjects.index(b.runs[0].subject)   # one study: its own order
    with pytest.raises(KeyError, match="subject 'sub-01' of study 'another-study' is not in this subject index"):
        SubjectIndex([a]).row(b, "sub-01")


def test_teacher_predictions_are_zscored_per_stimulus(demo_study):
    z = load_study(demo_study).stimuli["test01"].teacher.predictions
    raw = load_study(demo_study, teacher_zscore=False).stimuli["test01"].teacher.predictions.astype(np.float64)
    live = raw.std(0) > 0
    np.testing.assert_allclose(z[:, live].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, live].std(0), 1.0, atol=1e-3)
    assert abs(raw[:, live].std(0).mean() - 1.0) > 0.05         # the raw units are not already z-scores


def test_a_corpus_without_fmri_yields_windows_with_teacher_targets(broken_copy):
    """Stimuli with teacher outputs and no runs (Phase 2's main data): windows on the teacher's grid,
    held-out time ranges respected, batched beside fMRI windows."""
    import json

    from tinytribe.data.windows import StimulusWindow, make_stimulus_windows
    from tinytribe.model import create_model

    path = broken_copy / "study.json"
    data = json.loads(path.read_text())
    data["runs"] = [r for r in data["runs"] if r["stimulus"] != "story02"]        # story02: a corpus stimulus
    data["splits"]["train"] = [p for p in data["splits"]["train"] if p != "story02"] + [
        {"stimulus": "story02", "start_s": 0.0, "end_s": 25.0}]
    data["splits"]["val"].append({"stimulus": "story02", "start_s": 25.0, "end_s": 60.0})
    path.write_text(json.dumps(data))
    s = load_study(broken_copy)
    assert not any(r.stimulus == "story02" for r in s.runs)
    train = [w for w in make_stimulus_windows(s, "train", length_s=10.0) if w.stimulus == "story02"]
    assert train == [StimulusWindow("story02", 5.0, 15.0), StimulusWindow("story02", 15.0, 25.0)]   # teacher rows 5..
    val = [w for w in make_stimulus_windows(s, "val", length_s=10.0) if w.stimulus == "story02"]
    assert val[0].start_s == 25.0 and val[-1].end_s == 35.0                       # rows to 34 s (+1 s wide)
    it = window_item(s, train[0])
    assert it["fmri"] is None and it["subject"] == -1
    np.testing.assert_array_equal(it["teacher_times_s"], np.arange(5.0, 15.0))
    acts_t = it["teacher_act_times_s"]["fusion_l4"]
    assert acts_t[0] == 0.0 and acts_t[-1] == 9.5              # 2 Hz, the stimulus behind BOLD 5-15 s (5 s offset)
    fmri_w = next(w for w in make_windows(s, s.split("train"), n_trs=10) if s.runs[w.run].stimulus == "story01")
    batch = collate([window_item(s, fmri_w), it])
    assert batch["fmri_valid"][0].all() and not batch["fmri_valid"][1].any() and batch["has_teacher"].all()
    model = create_model("tiny-tribe-demo").eval()
    with torch.no_grad():
        out = model(batch["features"], batch["available"], batch["t0"], batch["grids"], batch["subject"],
                    masks=batch["masks"], kd_grids=batch["kd_grids"])
    assert out.responses["teacher"].shape == (2, 10, 5124) and torch.isfinite(out.responses["teacher"]).all()
    only = collate([it])
    assert "fmri" not in only and "fmri" not in only["grids"] and only["teacher"].shape == (1, 10, 5124)
    with pytest.raises(ValueError, match="grid must be 'teacher' or 'time'"):
        make_stimulus_windows(s, grid="tr")
    plain = make_stimulus_windows(s, ["silent01"], length_s=12.0, grid="time")
    assert [(w.start_s, w.end_s) for w in plain] == [(0.0, 12.0), (12.0, 24.0)]      # the 6 s rest < min_s
    assert len(make_stimulus_windows(s, ["silent01"], length_s=12.0, grid="time", min_s=5.0)) == 3


def test_a_window_predicts_the_same_alone_and_collated_beside_a_longer_one(study):
    """End padding through collate (the model-level test feeds tensors; this one goes through the batch)."""
    from tinytribe.model import create_model

    ws = make_windows(study, study.split("train"), n_trs=10)
    short = next(w for w in ws if w.n < 10)
    full = next(w for w in ws if w.n == 10 and w.run != short.run)
    model = create_model("tiny-tribe-demo").eval()

    def predict(batch):
        with torch.no_grad():
            return model(batch["features"], batch["available"], batch["t0"], {"fmri": batch["grids"]["fmri"]},
                         batch["subject"], masks=batch["masks"]).responses["fmri"]

    alone = predict(collate([window_item(study, short)]))
    together = predict(collate([window_item(study, full), window_item(study, short)]))
    assert together.shape[1] == 10 and alone.shape[1] == short.n
    torch.testing.assert_close(together[1, :short.n], alone[0], rtol=1e-4, atol=1e-5)


def test_activation_targets_tile_time_across_windows_and_splits(study):
    """A window owns the activations of the stimulus its BOLD samples follow (BOLD time minus the
    teacher's 5 s offset): consecutive windows share none."""
    run = next(i for i, r in enumerate(study.runs) if r.stimulus == "story01")
    ws = make_windows(study, [run], n_trs=10)
    times = [window_item(study, w)["teacher_act_times_s"]["fusion_l4"] for w in ws]
    for a, b in zip(times, times[1:]):
        assert not set(a.tolist()) & set(b.tolist()) and a.size and b.size
    w = ws[1]
    bold = study.runs[run].bold_times_s[w.first:w.first + w.n]
    t = times[1]
    assert t[0] >= bold[0] - 5.0 - 1e-9 and t[-1] < bold[-1] + study.runs[run].tr_s - 5.0


def test_items_of_two_studies_need_a_subject_index(two_studies):
    from tinytribe.data.windows import SubjectIndex

    a, b = two_studies
    wa, wb = make_windows(a, [0], n_trs=5)[0], make_windows(b, [0], n_trs=5)[0]
    with pytest.raises(ValueError, match="windows of studies another-study, tiny-tribe-demo share a batch"):
        collate([window_item(a, wa), window_item(b, wb)])
    index = SubjectIndex([a, b])
    batch = collate([window_item(a, wa, subjects=index), window_item(b, wb, subjects=index)])
    assert batch["subject"].tolist() == [index.row(a, a.runs[0].subject), index.row(b, b.runs[0].subject)]
