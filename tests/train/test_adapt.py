"""New subjects (FiLM only), new output spaces (a fresh head on a kept fusion model), ROI studies, and a
student run as a teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TINY

from tinytribe import adapt
from tinytribe.data.study import load_study
from tinytribe.data.windows import StimulusWindow, collate, window_item
from tinytribe.formats import TeacherChunk
from tinytribe.model.checkpoint import load_checkpoint
from tinytribe.train import phase2, phase3

SHORT = ["fmri.n_trs=10", "fmri.n_trs_late=20", "fmri.curriculum_epochs=0", "loop.device=cpu"]


@pytest.fixture(scope="module")
def fmri_checkpoint(demo_study, tmp_path_factory):
    """A tiny Phase 3 model of the demo's sub-01..03 (sub-04 held out)."""
    root = tmp_path_factory.mktemp("adapt")
    run = phase3.setup([demo_study], root / "p3", overrides=TINY + SHORT + [
        "loop.max_steps=6", 'fmri.exclude_subjects=["sub-04"]'])
    res = run.train(progress=False)
    return res.last


def test_a_new_subject_learns_only_its_film_vectors(demo_study, fmri_checkpoint):
    study = load_study(demo_study)
    before, _ = load_checkpoint(fmri_checkpoint)
    assert [k[1] for k in before.config.subject_keys] == ["sub-01", "sub-02", "sub-03"]
    model, rep = adapt.adapt_subject(fmri_checkpoint, study, "sub-04", minutes=0.5, steps=60)
    assert rep.row == 3 and model.config.subject_keys[3] == ["tiny-tribe-demo", "sub-04"]
    assert rep.n_trs == round(30 / 1.49) and rep.loss_end < rep.loss_start
    new = model.state_dict()
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, new[k])]
    assert changed == ["head.film.gamma_new", "head.film.beta_new"]   # (0, D) before: every other tensor is as it was
    film = model.head.film
    assert film.gamma_new.shape == (1, model.config.d_model)
    assert not torch.equal(film.gamma_new, film.gamma.mean(0, keepdim=True))   # it moved from the average
    # the fit's shortcut (FiLM is affine after a frozen network) is the model's own forward pass
    windows, n = adapt.subject_windows(study, "sub-04", minutes=0.5, n_trs=50)
    errs = []
    with torch.no_grad():
        for w in windows:
            b = collate([window_item(study, w)])
            out = model.eval()(b["features"], b["available"], b["t0"], b["grids"], subject=torch.tensor([rep.row]),
                               masks=b["masks"])
            k = b["fmri_valid"][0]
            errs.append((out.responses["fmri"][0][k] - b["fmri"][0][k].float())[:, torch.as_tensor(study.cortex)].pow(2))
    assert float(torch.cat(errs).mean()) == pytest.approx(rep.loss_end, rel=1e-4)
    with pytest.raises(ValueError, match="already has FiLM row 0"):
        adapt.adapt_subject(fmri_checkpoint, study, "sub-01", minutes=0.5, steps=1)


def test_roi_study_holds_roi_means_and_a_new_space_keeps_the_fusion_model(demo_study, fmri_checkpoint, tmp_path):
    src = load_study(demo_study, zscore=False, teacher=False)
    first, second = np.zeros(src.study.n_outputs, bool), np.zeros(src.study.n_outputs, bool)
    first[:100], second[50:250] = True, True   # ROIs may overlap
    root = adapt.roi_study(demo_study, tmp_path / "rois", {"first": first, "second": second})
    rois = load_study(root, zscore=False)
    assert rois.study.space == "custom:2" and rois.study.output_names == ["first", "second"]
    keep = ~src.medial_wall
    want = np.stack([src.runs[0].fmri[:, first & keep].mean(1), src.runs[0].fmri[:, second & keep].mean(1)], 1)
    np.testing.assert_allclose(rois.runs[0].fmri, want, rtol=1e-5)
    assert rois.stimuli[src.runs[0].stimulus].teacher is not None   # the stimuli are shared, teacher outputs too

    res = adapt.new_space(fmri_checkpoint, root, tmp_path / "transfer", head_epochs=1, finetune_epochs=0,
                          overrides=["fmri.n_trs=10", "fmri.n_trs_late=20", "fmri.curriculum_epochs=0"])
    assert any("teacher terms off" in n for n in res["notes"])
    moved, _ = load_checkpoint(res["checkpoint"])
    kept, _ = load_checkpoint(fmri_checkpoint)
    assert moved.head.proj.weight.shape == (2, kept.config.d_model)
    for k, v in kept.state_dict().items():
        if k.startswith(("fusion.", "projectors.")):
            assert torch.equal(v, moved.state_dict()[k]), k   # head only: the fusion model is the checkpoint's


def test_a_student_as_teacher_predicts_what_the_model_predicts_and_records_its_origin(demo_study, tmp_path):
    from tinytribe.teacher.protocol import load_teacher

    run = phase2.setup([demo_study], tmp_path / "p2", overrides=TINY + ["loop.max_steps=2"])
    ck = run.train(progress=False).last
    study = load_study(demo_study)
    sid = "story01" if "story01" in study.stimuli else sorted(study.stimuli)[0]
    media = demo_study / study.study.stimuli[sid].media
    whole = load_teacher("student", checkpoint=ck, features=demo_study / "features")
    blocks = load_teacher("student", checkpoint=ck, features=demo_study / "features", block_s=7.0)
    out = whole.predict(media, 0.0, 20.0)
    np.testing.assert_allclose(out.times_s, np.arange(20.0))
    in_blocks = blocks.predict(media, 0.0, 20.0).predictions   # windows of 7 s: other context, same rows
    assert in_blocks.shape == out.predictions.shape and np.isfinite(in_blocks).all()
    # the same rows through the training data path: BOLD 5..25 s, the average subject
    model, _ = load_checkpoint(ck)
    b = collate([window_item(study, StimulusWindow(sid, 5.0, 25.0))])
    with torch.no_grad():
        ref = model(b["features"], b["available"], b["t0"], {"teacher": b["grids"]["teacher"]}, masks=b["masks"])
    k = b["teacher_valid"][0]
    np.testing.assert_allclose(out.predictions, ref.responses["teacher"][0][k].numpy(), atol=1e-5)
    assert whole.info.id == "tinytribe/student" and whole.info.activations == {}
    assert out.events[0]["type"] == "student" and out.events[0]["step"] == 2
    # a chunk made by the job carries that origin, and another checkpoint is another revision
    from tinytribe.train.pseudo import pseudo_label

    man = pseudo_label(ck, [media], demo_study / "features", tmp_path / "pseudo", media_root=demo_study, progress=False)
    chunk = TeacherChunk.load(next((tmp_path / "pseudo" / "teacher").glob("*.npz")))
    assert chunk.teacher["id"] == "tinytribe/student" and chunk.events[0]["checkpoint_sha256"]
    assert man.is_file()
    later = phase2.setup([demo_study], tmp_path / "p2", overrides=TINY + ["loop.max_steps=3"], resume=None)
    other = load_teacher("student", checkpoint=later.train(progress=False).last, features=demo_study / "features")
    assert other.info.revision != whole.info.revision
    with pytest.raises(FileNotFoundError, match="no feature cache for"):
        whole.predict(tmp_path / "unknown.mp4", 0.0, 5.0)
