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
    assert abs(frac - 0.75) < 0.04
    again = WindowSampler(ws, {"a": 3.0, "b": 1.0}, seed=7)
    again.draw(1000)
    assert again.draw(1000) == draws[1000:]                  # a resumed sampler continues the same sequence
    with pytest.raises(ValueError, match="weights for unknown studies"):
        WindowSampler(ws, {"c": 1.0})
