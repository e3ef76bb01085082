"""The shared training loop on the demo study: exact resume, stops on NaN and collapse, precision,
checkpoint v2, and that training never reads held-out windows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tinytribe.formats import Checkpoint
from tinytribe.train import phase2
from tinytribe.train.logs import read_log
from tinytribe.train.loop import pick_precision
from tinytribe.train.monitors import collapsed, routing_health


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def test_a_run_stopped_and_resumed_ends_with_the_weights_of_one_run(demo_study, tmp_path, tiny):
    # dropout, stochastic depth and modality dropout on (their random draws must resume too); the stop
    # falls inside an epoch (11 windows, batch 8: two steps an epoch)
    opts = tiny + ["loop.max_steps=7", "loop.val_every=3", "loop.checkpoint_every=0"]
    whole = phase2.setup([demo_study], tmp_path / "whole", overrides=opts)
    assert whole.train(progress=False).status == "done"

    first = phase2.setup([demo_study], tmp_path / "split", overrides=opts + ["loop.stop_after=3"])
    r1 = first.train(progress=False)
    assert r1.status == "budget" and r1.step == 3 and "resume from" in r1.message
    again = phase2.setup([demo_study], tmp_path / "split", overrides=opts)
    assert again.resume is not None and "resuming" in again.notes[0]
    r2 = again.train(progress=False)
    assert r2.status == "done" and r2.step == 7
    _assert_same(_weights(whole.model), _weights(again.model))
    # the resumed run's log continues the first one's: one row per step, no gap, no repeat
    steps = read_log(tmp_path / "split" / "train_log.csv")["step"]
    assert steps.tolist() == list(range(1, 8))
    np.testing.assert_array_equal(read_log(tmp_path / "split" / "train_log.csv")["kd"],
                                  read_log(tmp_path / "whole" / "train_log.csv")["kd"])


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_weights(demo_study, tmp_path, tiny, subprocess_env):
    opts = tiny + ["--loop.max_steps=12", "--loop.checkpoint_every=2", "--loop.val_every=0"]
    whole = phase2.setup([demo_study], tmp_path / "whole", overrides=[o.lstrip("-") for o in opts])
    whole.train(progress=False)

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tinytribe.train.phase2", "--study", str(demo_study), "--run-dir", str(run),
           "--no-progress", *opts]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and Checkpoint.load(last).step >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = Checkpoint.load(last).step
    assert 4 <= killed_at < 12
    assert phase2.main(["--study", str(demo_study), "--run-dir", str(run), "--no-progress", *opts]) == 0
    back = Checkpoint.load(last)
    assert back.step == 12
    _assert_same(_weights(whole.model), back.model_state)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(demo_study, tmp_path, tiny):
    run = phase2.setup([demo_study], tmp_path / "nan", overrides=tiny + ["loop.max_steps=8", "loop.checkpoint_every=2"])
    loss = run.recipe.loss

    def poisoned(model, batch, step):
        total, logs = loss(model, batch, step)
        if step == 5:
            logs["kd"] = torch.tensor(float("nan"))
            total = total + logs["kd"]
        return total, logs

    run.recipe.loss = poisoned
    result = run.train(progress=False)
    assert result.status == "nan"
    assert "\n" not in result.message and "step 5" in result.message and "kd" in result.message
    assert str(tmp_path / "nan" / "checkpoints" / "last.pt") in result.message
    ck = Checkpoint.load(result.last)
    assert ck.step == 4 and all(torch.isfinite(v).all() for v in ck.model_state.values() if v.is_floating_point())


def test_collapsed_routing_stops_after_three_validations(demo_study, tmp_path, tiny):
    run = phase2.setup([demo_study], tmp_path / "collapse", overrides=tiny + [
        "loop.max_steps=10", "loop.val_every=1", "kd.lr_head=0", "kd.lr_projectors=0", "kd.lr_transformer=0",
        "kd.router_warmup_steps=0", "loop.checkpoint_every=1"])
    with torch.no_grad():   # every token reaches the router as one constant vector that prefers experts 0 and 1
        for block in run.model.fusion.blocks:
            block.ln2.weight.zero_()
            block.ln2.bias.fill_(1.0)
            block.moe.router.weight.copy_(torch.tensor([3.0, 2.0, -2.0, -3.0])[:, None].expand_as(block.moe.router.weight))
    result = run.train(progress=False)
    assert result.status == "collapse" and result.step == 3
    assert "routing collapsed for 3 validations" in result.message and "0.000/E" in result.message
    assert "last good checkpoint: none yet" in result.message
    assert not (tmp_path / "collapse" / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "collapse" / "checkpoints" / "last.pt").exists(), "a collapsed state was checkpointed"
    shares = read_log(tmp_path / "collapse" / "val_log.csv")
    assert shares["share_e2"][0] == 0 and shares["share_e0"][0] == pytest.approx(2.0)   # experts 0 and 1 take all


def test_routing_monitors():
    E = 4
    balanced = np.full((2, E), 1 / E)
    h = routing_health(balanced)
    assert h["route_entropy_frac"] == pytest.approx(1.0) and h["min_share_e"] == pytest.approx(1.0)
    assert collapsed(h) is None and [h[f"share_e{i}"] for i in range(E)] == pytest.approx([1.0] * E)
    starved = np.array([[0.3, 0.3, 0.38, 0.02], [0.25] * 4])   # one expert below 0.1 / E in one layer
    assert "token share" in collapsed(routing_health(starved))
    assert collapsed(routing_health(np.array([[0.97, 0.01 + 0.01, 0.005, 0.005]]))) is not None


def test_precision_follows_the_device(monkeypatch):
    assert pick_precision("cpu") == "fp32"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        pick_precision("cpu", "bf16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert pick_precision("cuda") == "fp16"   # T4: no bf16, so fp16 with gradient scaling
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert pick_precision("cuda") == "bf16"


def test_checkpoint_v2_records_the_recipe_and_teacher_and_v1_still_loads(demo_study, tmp_path, tiny):
    from tinytribe.model.checkpoint import load_checkpoint

    run = phase2.setup([demo_study], tmp_path / "v2", overrides=tiny + ["loop.max_steps=2"])
    result = run.train(progress=False)
    ck = Checkpoint.load(result.last)
    assert ck.format_version == 2 and ck.recipe == "phase2" and ck.phase == "kd"
    assert ck.train_config["recipe"]["weights"]["kd"] == 0.6 and ck.train_config["loop"]["max_steps"] == 2
    assert ck.teacher["id"] == "tinytribe/demo-teacher" and ck.teacher["revision"]
    longest = max(len(run.recipe.dataset[i]["masks"]["text"]) for i in range(len(run.recipe.dataset)))
    assert ck.config["trained_steps"] == run.recipe.window_steps and 0 <= run.recipe.window_steps - longest <= 2
    assert ck.scheduler_state and ck.optimizer_state and "torch" in ck.rng_state
    payload = torch.load(result.last, weights_only=True)
    v1 = {k: v for k, v in payload.items() if k not in ("recipe", "train_config", "heads_state", "teacher",
                                                         "scaler_state")}
    v1["format_version"] = 1
    torch.save(v1, tmp_path / "v1.pt")
    model, old = load_checkpoint(tmp_path / "v1.pt")
    assert old.recipe == "" and old.teacher is None and old.step == 2
    _assert_same(_weights(model), ck.model_state)


def test_partial_loading_reports_and_a_phase1_start_freezes_the_embeddings(demo_study, tmp_path, tiny):
    from tinytribe.model import TinyTribe
    from tinytribe.model.checkpoint import load_partial, save_checkpoint
    from tinytribe.model.config import get_config

    cfg = get_config("tiny-tribe-demo", [o.split(".", 1)[1] for o in tiny])
    source = TinyTribe(cfg)
    save_checkpoint(source, tmp_path / "selfsup.pt", phase="selfsup", step=100)
    target = TinyTribe(get_config("tiny-tribe-demo", [o.split(".", 1)[1] for o in tiny] + ["space=schaefer-1000"]))
    report = load_partial(target, source.state_dict() | {"extra.weight": torch.zeros(2)})
    assert report.skipped == {"head.proj.weight": "shape (5124, 32) here (1000, 32)", "extra.weight": "not in this model"}
    assert report.new == ["head.proj.weight"] and len(report.taken) == len(source.state_dict()) - 1
    torch.testing.assert_close(target.fusion.blocks[0].moe.w1, source.fusion.blocks[0].moe.w1)

    run = phase2.setup([demo_study], tmp_path / "from_phase1", overrides=tiny, init_from=tmp_path / "selfsup.pt")
    assert "took" in run.notes[0] and run.recipe.config.freeze_embeddings is True
    groups = run.recipe.param_groups(run.model)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert all(id(p) not in in_groups and not p.requires_grad for p in run.model.embeddings.parameters())
    assert run.recipe.router_schedule(0) == (0.01, 1.0), "no router warm-up after a pre-trained router"
    fresh = phase2.setup([demo_study], tmp_path / "fresh", overrides=tiny)
    assert fresh.recipe.router_schedule(0) == (0.1, 2.0)
    assert fresh.recipe.router_schedule(500) == pytest.approx((0.055, 1.5))
    assert fresh.recipe.router_schedule(1000) == (0.01, 1.0)
    lrs = {g["name"]: g["lr"] for g in fresh.recipe.param_groups(fresh.model)}
    assert lrs == {"head": 1e-3, "projectors": 1e-4, "transformer": 1e-4}
    head_ids = {id(p) for g in fresh.recipe.param_groups(fresh.model) if g["name"] == "head" for p in g["params"]}
    assert all(id(p) in head_ids for p in fresh.model.pool.parameters()), "the modality gates train at the head's rate"
    assert any(p.requires_grad for p in fresh.model.embeddings.parameters()), "from random init the embeddings train"


def test_training_windows_come_from_the_training_split_only(demo_study, tmp_path, tiny):
    run = phase2.setup([demo_study], tmp_path / "split", overrides=tiny)
    st = run.recipe.studies[0]
    train, held = set(st.study.splits["train"]), set(st.study.splits["val"]) | set(st.study.splits["test"])
    used = {w.stimulus for _, w in run.recipe.dataset.windows}
    assert used <= train and not used & held and all(st.stimuli[s].teacher is not None for s in held)
    assert {w.stimulus for _, ws in run.recipe.val for w in ws} == set(st.study.splits["val"])


def test_phase2_main_trains_losses_go_down(demo_study, tmp_path, tiny, capsys):
    run = tmp_path / "main"
    rc = phase2.main(["--study", str(demo_study), "--run-dir", str(run), "--no-progress", *[f"--{o}" for o in tiny],
                      "--loop.max_steps=24", "--loop.val_every=12", "--kd.modality_dropout=0", "--kd.lr_projectors=1e-3",
                      "--kd.lr_transformer=1e-3", "--kd.lr_head=3e-3"])
    assert rc == 0 and "finished 24 steps" in capsys.readouterr().out
    log = read_log(run / "train_log.csv")
    for term in ("loss", "kd", "feature", "temporal", "multires", "aux"):
        assert np.isfinite(log[term]).all(), term
    assert log["kd"][-6:].mean() < 0.95 * log["kd"][:6].mean()
    assert log["feature"][-6:].mean() < log["feature"][:6].mean()
    val = read_log(run / "val_log.csv")
    assert val["r_teacher"][-1] > val["r_teacher"][0] and np.isfinite(val["r_fmri"]).all()


def test_bad_settings_are_one_line_errors(demo_study, tmp_path, capsys):
    assert phase2.main(["--study", str(demo_study), "--run-dir", str(tmp_path / "x"), "--kd.nope=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err
    assert phase2.main(["--study", str(demo_study), "--run-dir", str(tmp_path / "x"), "--epochs=3"]) == 2
    assert "expected --model.<key>" in capsys.readouterr().err
    assert phase2.main(["--study", str(demo_study), "--run-dir", str(tmp_path / "x"), "--kd.weights={\"mse\": 1}"]) == 2
    assert "unknown loss term 'mse'" in capsys.readouterr().err


def test_the_sprint_recipe_runs_on_the_demo(demo_study, tmp_path, tiny):
    run = phase2.setup([demo_study], tmp_path / "sprint", recipe="sprint", overrides=tiny + ["loop.max_steps=4",
                                                                                             "loop.val_every=4"])
    assert run.model.config.space == "schaefer-1000" and run.loop.epochs == 20 and run.loop.checkpoint_every_epochs == 5
    assert run.recipe.config.window_s == pytest.approx(74.5) and run.recipe.teacher_map is not None
    result = run.train(progress=False)
    assert result.status == "done"
    assert np.isfinite(result.metrics["r_teacher"]) and np.isfinite(result.metrics["r_fmri"])
    assert "multires" not in read_log(tmp_path / "sprint" / "train_log.csv")


def test_main_restores_from_and_pushes_to_a_sync_remote(demo_study, tmp_path, tiny, capsys):
    remote = tmp_path / "remote"
    remote.mkdir()
    args = ["--study", str(demo_study), "--no-progress", "--sync-remote", f"folder:{remote}",
            *[f"--{o}" for o in tiny], "--loop.max_steps=4", "--loop.checkpoint_every=2"]
    assert phase2.main([*args, "--run-dir", str(tmp_path / "session1"), "--loop.stop_after=2"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert Checkpoint.load(remote / "checkpoints" / "last.pt").step == 2
    # a new session on another machine: an empty run folder, restored from the remote, resumes at step 2
    assert phase2.main([*args, "--run-dir", str(tmp_path / "session2")]) == 0
    out = capsys.readouterr().out
    assert "restored" in out and "at step 2" in out and "finished 4 steps" in out
    assert Checkpoint.load(remote / "checkpoints" / "last.pt").step == 4


def test_the_loss_minimised_is_the_weighted_sum_of_every_term(demo_study, tmp_path, tiny):
    from tinytribe.data.windows import collate

    run = phase2.setup([demo_study], tmp_path / "sum", overrides=tiny + ["model.dropout=0", "model.drop_path=0",
                                                                         "kd.modality_dropout=0"])
    batch = collate([run.recipe.dataset[i] for i in range(3)])
    for step, aux_weight in ((0, 0.1), (500, 0.055), (2000, 0.01)):   # the router warm-up's aux weight is applied
        total, logs = run.recipe.loss(run.model, batch, step)
        assert logs["aux_weight"] == pytest.approx(aux_weight)
        weights = dict(run.recipe.config.weights, aux=aux_weight)
        assert set(weights) == {"kd", "feature", "temporal", "multires", "aux"} <= set(logs)
        expected = sum(w * float(logs[k]) for k, w in weights.items())
        assert float(total.detach()) == pytest.approx(expected, rel=1e-6)
        assert all(float(logs[k]) > 0 for k in weights), "every weighted term contributes"


def test_non_finite_gradients_with_a_finite_loss_stop_before_the_step(demo_study, tmp_path, tiny):
    run = phase2.setup([demo_study], tmp_path / "grad", overrides=tiny + ["loop.max_steps=6", "loop.checkpoint_every=1"])
    weight = run.model.head.proj.weight
    loss = run.recipe.loss

    def poisoned(model, batch, step):
        total, logs = loss(model, batch, step)
        if step == 3:
            weight.register_hook(lambda g: g * float("inf"))
        return total, logs

    run.recipe.loss = poisoned
    result = run.train(progress=False)
    assert result.status == "nan" and "gradients are not finite" in result.message and "step 3" in result.message
    ck = Checkpoint.load(result.last)
    assert ck.step == 3 and torch.isfinite(ck.model_state["head.proj.weight"]).all()
    assert torch.isfinite(run.model.head.proj.weight).all(), "the bad step was never applied"


def test_validation_stimuli_without_teacher_outputs_are_scored_on_fmri_only(demo_study, tmp_path, tiny):
    import shutil

    from tinytribe.data.study import load_study

    copy = tmp_path / "study"
    shutil.copytree(demo_study, copy, ignore=shutil.ignore_patterns("stimuli"))
    study = load_study(copy)
    study.stimuli["story03"].teacher = None   # the val stimulus was scanned, never given to the teacher
    run = phase2.setup([study], tmp_path / "run", overrides=tiny + ["loop.max_steps=2"])
    assert run.recipe.val == [(study, [])]
    result = run.train(progress=False)
    assert result.status == "done" and "r_teacher" not in result.metrics and np.isfinite(result.metrics["r_fmri"])
    assert "route_entropy_frac" in result.metrics, "routing judged on the training steps instead"
