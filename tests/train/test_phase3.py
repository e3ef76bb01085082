"""Phase 3 on the demo study: the per-window weighting of the terms, the curriculum and dropout schedule,
study mixing, exact resume across the curriculum switch, pseudo-labels, and the monitors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytribe.config import ConfigError
from tinytribe.data.study import load_study
from tinytribe.data.windows import collate
from tinytribe.train import phase2, phase3
from tinytribe.train.logs import read_log
from tinytribe.train.losses.fmri import combine, full_weight

SHORT = ["fmri.n_trs=10", "fmri.n_trs_late=20", "fmri.curriculum_epochs=2", "loop.device=cpu"]


def test_terms_are_renormalised_per_window_and_corpus_windows_keep_their_weights():
    w = {"fmri": 0.4, "teacher": 0.3, "feature": 0.1, "temporal": 0.1, "multires": 0.05, "aux": 0.01, "pseudo": 0.2}
    computed = {"fmri", "teacher", "feature", "temporal", "multires", "pseudo"}
    full = full_weight(w, computed)
    assert full == pytest.approx(0.95)
    t = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    b = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    # window 0: fMRI with a real teacher; 1: fMRI without a teacher; 2: a pseudo-labelled corpus window
    terms = {"fmri": (t(1.0, 2.0, 0.0), b(1, 1, 0)), "temporal": (t(0.5, 0.6, 0.0), b(1, 1, 0)),
             "multires": (t(0.2, 0.3, 0.0), b(1, 1, 0)), "teacher": (t(0.7, 0.0, 0.9), b(1, 0, 0)),
             "pseudo": (t(0.7, 0.0, 0.9), b(0, 0, 1)), "feature": (t(0.8, 0.0, 0.0), b(1, 0, 0)),
             "aux": (t(3.0, 3.0, 3.0), b(1, 1, 1))}
    total, logs = combine(terms, w, b(1, 1, 0), full)
    w0 = 0.4 * 1.0 + 0.1 * 0.5 + 0.05 * 0.2 + 0.3 * 0.7 + 0.1 * 0.8
    w1 = (0.4 * 2.0 + 0.1 * 0.6 + 0.05 * 0.3) * 0.95 / 0.55
    w2 = 0.2 * 0.9   # not renormalised: pseudo-labels weigh less than fMRI and the real teacher
    assert float(total) == pytest.approx((w0 + w1 + w2) / 3 + 0.01 * 3.0, rel=1e-6)
    assert float(logs["teacher"]) == pytest.approx(0.7) and float(logs["pseudo"]) == pytest.approx(0.9)
    assert float(logs["fmri"]) == pytest.approx(1.5)


def test_the_teacher_term_reads_the_average_subject_and_fmri_the_subjects_own(demo_study, tiny):
    from tinytribe.data.windows import SubjectIndex, make_windows, window_item
    from tinytribe.model import TinyTribe
    from tinytribe.model.config import get_config

    st = load_study(demo_study)
    model = TinyTribe(get_config("tiny-tribe-demo", [o for o in tiny if o.startswith("model.")])).eval()
    with torch.no_grad():
        model.head.film.gamma.mul_(torch.linspace(0.5, 1.5, model.head.film.gamma.shape[0])[:, None])
    w = make_windows(st, st.split("train"), n_trs=10)[0]
    batch = collate([window_item(st, w, subjects=SubjectIndex([st]))])
    args = (batch["features"], batch["available"], batch["t0"], batch["grids"])
    with torch.no_grad():
        both = model(*args, subject=batch["subject"], masks=batch["masks"], average_grids=("teacher",))
        own = model(*args, subject=batch["subject"], masks=batch["masks"])
        avg = model(*args, subject=None, masks=batch["masks"])
    torch.testing.assert_close(both.responses["teacher"], avg.responses["teacher"])
    torch.testing.assert_close(both.responses["fmri"], own.responses["fmri"])
    assert not torch.allclose(own.responses["teacher"], avg.responses["teacher"])


def test_curriculum_dropout_schedule_and_resume_across_the_switch(demo_study, tmp_path, tiny):
    # the design's schedule compressed to an epoch per stage, so that each epoch has its own rate
    opts = tiny + SHORT + ["loop.epochs=3", "loop.checkpoint_every=0", "fmri.modality_dropout=[[0,0.3],[1,0.1],[2,0]]"]
    whole = phase3.setup([demo_study], tmp_path / "whole", overrides=opts)
    rec = whole.recipe
    assert rec.length_at(0) == rec.length_at(1) == 10 and rec.length_at(2) == 20
    lengths = [len(rec.batches(e, 4, 0, 1)) for e in range(3)]
    assert lengths[0] == lengths[1] > lengths[2]   # twice as many short windows
    for e in range(3):
        for batch in rec.batches(e, 4, 0, 1):
            assert {rec._windows[i][1].n for i in batch} <= {rec.length_at(e), *range(10, rec.length_at(e) + 1)}
    assert whole.train(progress=False).status == "done"
    log = read_log(tmp_path / "whole" / "train_log.csv")
    ends = np.cumsum(lengths)
    want = np.repeat([0.3, 0.1, 0.0], lengths)
    np.testing.assert_allclose(log["modality_dropout"], want)
    assert "backbones frozen" in " ".join(whole.notes)
    # stopped inside the last epoch (after the switch to 20-TR windows), resumed: the same weights
    first = phase3.setup([demo_study], tmp_path / "split", overrides=opts + [f"loop.stop_after={ends[1] + 1}"])
    assert first.train(progress=False).status == "budget"
    again = phase3.setup([demo_study], tmp_path / "split", overrides=opts)
    assert again.train(progress=False).status == "done"
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    ck = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["data_position"]["epoch_lengths"] == lengths
    np.testing.assert_allclose(read_log(tmp_path / "split" / "train_log.csv")["modality_dropout"], want)   # after the resume too


def test_dropout_schedule_follows_the_design():
    c = phase3.FMRIConfig()
    assert [c.dropout_at(e) for e in range(10)] == [0.3] * 3 + [0.1] * 3 + [0.0] * 4
    with pytest.raises(ValueError, match="unknown loss term 'fMRI'"):
        phase3.FMRIConfig(weights={"fMRI": 1.0})


def test_studies_mix_by_weight_an_audio_text_study_trains_and_spaces_must_agree(demo_study, story_study, tmp_path,
                                                                                tiny):
    from tinytribe.data.demo.build import audio_text_copy

    stories = audio_text_copy(demo_study, tmp_path / "stories", name="stories")
    run = phase3.setup([demo_study, stories], tmp_path / "mix", overrides=tiny + SHORT + [
        "loop.max_steps=4", 'fmri.study_weights={"stories": 0.3}'])
    rec = run.recipe
    assert len(rec.subjects) == 8 and run.model.config.subject_keys[4] == ["stories", "sub-01"]
    counts = {"tiny-tribe-demo": 0, "stories": 0}
    for batch in rec.batches(0, 4, 0, 1):
        names = {rec.studies[rec._windows[i][0]].study.name for i in batch}
        assert len(names) == 1   # a batch holds one study's windows
        counts[names.pop()] += len(batch)
    n = len(rec._groups[10]["tiny-tribe-demo@1.49"])
    assert counts["tiny-tribe-demo"] == n and int(0.3 * n) <= counts["stories"] <= int(0.3 * n) + 1
    story_items = [rec.dataset[i] for i in rec._groups[10]["stories@1.49"][:2]]
    assert not any(it["available"][2] for it in story_items)   # video absent, masked, never faked
    assert run.train(progress=False).status == "done"
    film = phase3.film_spread(run.model, rec.subjects.keys, with_study=True)
    assert {"film_gamma_dev_stories/sub-01", "film_gamma_dev_tiny-tribe-demo/sub-01"} <= set(film) and len(film) == 10
    with pytest.raises(ConfigError, match=r"study one-story is in custom:6, the model predicts fsaverage4, and custom:6 does not reduce to it"):
        phase3.setup([demo_study, story_study], tmp_path / "bad", overrides=tiny + SHORT)
    with pytest.raises(ConfigError, match="study_weights: no study named 'lebel'"):
        phase3.setup([demo_study], tmp_path / "bad2", overrides=tiny + SHORT + ['fmri.study_weights={"lebel": 0.3}'])


def test_a_transcript_only_study_trains_its_own_roi_space(story_study, tmp_path, tiny):
    run = phase3.setup([story_study], tmp_path / "story", overrides=tiny + [
        "model.space=custom:6", "loop.max_steps=3", "fmri.n_trs=8", "fmri.n_trs_late=8", "fmri.curriculum_epochs=0"])
    assert "multi-resolution term skipped" in " ".join(run.notes)
    item = run.recipe.dataset[0]
    assert item["available"].tolist() == [True, False, False]
    res = run.train(progress=False)
    assert res.status == "done" and np.isfinite(read_log(tmp_path / "story" / "train_log.csv")["fmri"]).all()


def test_pseudo_labels_take_their_weight_and_need_a_good_enough_student(demo_study, tmp_path, tiny):
    from tinytribe.train.pseudo import pseudo_label

    p2 = phase2.setup([demo_study], tmp_path / "p2", overrides=tiny + ["loop.max_steps=2"]).train(progress=False)
    st = load_study(demo_study)
    corpus = sorted(s for s in st.stimuli if s.startswith("corpus"))[:2]
    man = pseudo_label(p2.last, [demo_study / st.study.stimuli[c].media for c in corpus], demo_study / "features",
                       tmp_path / "pseudo", media_root=demo_study, progress=False)
    opts = tiny + SHORT + ["loop.max_steps=3", f'fmri.pseudo_labels=["{man}"]', "fmri.pseudo_replace=true"]
    low = phase3.setup([demo_study], tmp_path / "low", overrides=opts + ["fmri.pseudo_min_score=0.99"])
    assert "left out: their student's validation score" in " ".join(low.notes) and not low.recipe.pseudo_ids
    run = phase3.setup([demo_study], tmp_path / "p3", overrides=opts + ["fmri.pseudo_min_score=-1"])
    assert run.recipe.pseudo_ids == set(corpus)
    # a scanned training stimulus and a val stimulus pseudo-labelled too: the threshold holds for the
    # fMRI windows, and validation keeps the real teacher
    scanned = st.runs[st.split("train").runs[0]].stimulus
    val = st.runs[st.split("val").runs[0]].stimulus
    more = pseudo_label(p2.last, [demo_study / st.study.stimuli[s].media for s in (scanned, val)],
                        demo_study / "features", tmp_path / "pseudo2", media_root=demo_study, progress=False)
    both = ["loop.max_steps=3", f'fmri.pseudo_labels=["{more}"]', "fmri.pseudo_replace=true"]
    low2 = phase3.setup([demo_study], tmp_path / "low2", overrides=tiny + SHORT + both + ["fmri.pseudo_min_score=0.99"])
    assert not low2.recipe.pseudo_ids and low2.recipe.studies[0].stimuli[scanned].teacher is None
    ok = phase3.setup([demo_study], tmp_path / "ok2", overrides=tiny + SHORT + both + ["fmri.pseudo_min_score=-1"])
    assert ok.recipe.pseudo_ids == {scanned}
    assert ok.recipe.studies[0].stimuli[val].teacher.teacher["id"] == "tinytribe/demo-teacher"
    corpus_idx = run.recipe._groups[10]["tiny-tribe-demo@corpus"]
    b = collate([run.recipe.dataset[i] for i in corpus_idx[:2]] + [run.recipe.dataset[0]])
    assert b["teacher_ids"][:2] == ["tinytribe/student"] * 2 and b["teacher_ids"][2] == "tinytribe/demo-teacher"
    assert not b["teacher_acts_valid"]["fusion_l4"][:2].any() and b["teacher_acts_valid"]["fusion_l4"][2].any()
    _, logs = run.recipe.loss(run.model.train(), b, 0)
    assert logs["pseudo_share"] == pytest.approx(2 / 3) and logs["teacher_share"] == pytest.approx(1 / 3)
    assert {"pseudo", "teacher", "feature", "fmri"} <= set(logs)
    assert run.train(progress=False).status == "done"


def test_validation_reports_subjects_teacher_consistency_and_film_and_warns(demo_study, tmp_path, tiny):
    run = phase3.setup([demo_study], tmp_path / "val", overrides=tiny + SHORT + ["loop.max_steps=1",
                                                                                   'fmri.exclude_subjects=["sub-04"]'])
    rec = run.recipe
    out = rec.validate(run.model, "cpu")
    assert {"r_sub-01", "r_sub-03", "teacher_mse", "film_gamma_dev_max", "film_gamma_spread"} <= set(out)
    assert "r_sub-04" not in out   # a held-out subject never chooses the checkpoint
    with pytest.raises(ConfigError, match="fmri.exclude_subjects: no subject 'sub-4'"):
        phase3.setup([demo_study], tmp_path / "typo", overrides=tiny + SHORT + ['fmri.exclude_subjects=["sub-4"]'])
    assert out["score"] == out["r_fmri"] and np.isfinite(out["teacher_mse"])
    rec._teacher_mse_low = out["teacher_mse"] / 2   # as if it had been half as large before
    with pytest.warns(UserWarning, match="increase the teacher weight"):
        rec.validate(run.model, "cpu")
    with pytest.warns(UserWarning, match="FiLM is not learning subject differences"):
        rec.validate(run.model, "cpu")   # the third validation with every gamma still 1


def test_the_sprint_recipe_fine_tunes_a_parcel_model_on_vertex_fmri(demo_study, tmp_path, tiny):
    """The sprint's Phase 3: a Schaefer-1000 student, the demo's fsaverage4 runs and teacher averaged into
    its parcels on the fly; 0.5 fMRI + 0.3 teacher + 0.2 temporal."""
    run = phase3.setup([demo_study], tmp_path / "sprint", recipe="sprint-fmri", overrides=tiny + [
        "model.space=schaefer-1000", "loop.max_steps=2", "fmri.n_trs_late=20", "loop.device=cpu"])
    rec = run.recipe
    assert rec.full == pytest.approx(1.0) and rec.computed == {"fmri", "teacher", "temporal", "pseudo"}
    item = rec.dataset[0]
    assert item["fmri"].shape[1] == item["teacher"].shape[1] == 1000
    assert rec.length_at(0) == rec.length_at(5) == 20 and run.loop.epochs == 8 and run.loop.batch_size == 4
    sprint = phase3.RECIPES["sprint-fmri"].recipe
    assert sprint.n_trs_late == 100 and sprint.curriculum_epochs == 0   # 100-TR windows throughout
    assert run.train(progress=False).status == "done"
    assert {"fmri", "teacher", "temporal"} <= set(read_log(tmp_path / "sprint" / "train_log.csv"))


def test_phase3_command_line_trains_and_refuses_a_bad_key_in_one_line(demo_study, tmp_path, tiny, capsys):
    args = ["--study", str(demo_study), "--run-dir", str(tmp_path / "cli"), "--no-progress",
            *[f"--{o}" for o in tiny + ["loop.max_steps=2", "fmri.n_trs_late=20", "fmri.curriculum_epochs=0"]]]
    assert phase3.main(args + ["--fmri.n_tr=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'n_tr'" in err[0]
    assert phase3.main(args) == 0
    assert "phase3: finished 2 steps" in capsys.readouterr().out
