"""The whole student: shapes, gradients, invariances, determinism, checkpoints, configs."""

from __future__ import annotations

import json

import pytest
import torch

from tinytribe.config import ConfigError
from tinytribe.formats import FormatError
from tinytribe.model import TimeGrid, TinyTribe, create_model, get_config, list_configs
from tinytribe.model.checkpoint import load_checkpoint, save_checkpoint
from tinytribe.model.params import DESIGN, parameter_table

from .conftest import grid_for, make_batch, tiny_config


@pytest.mark.parametrize("over", [{}, {"space": "schaefer-400", "n_layers": 2, "local_layers": 1},
                                  {"n_experts": 2, "top_k": 1, "local_layers": 0}, {"d_model": 48, "n_heads": 6}])
def test_shapes_over_tiny_configs(over):
    cfg = tiny_config(**over)
    model = TinyTribe(cfg)
    feats, avail, t0 = make_batch(cfg, B=2, T=20)
    grids = {"fmri": grid_for(t0, 20), "teacher": TimeGrid.regular(t0 + 1.0, 8, 1.0, batch=2)}
    out = model(feats, avail, t0, grids, torch.tensor([0, 2]), return_fused=True)
    assert out.responses["fmri"].shape == (2, grids["fmri"].times.shape[1], cfg.n_outputs)
    assert out.responses["teacher"].shape == (2, 8, cfg.n_outputs)
    assert out.gates.shape == (2, 20, 3) and out.fused.shape == (2, 20, cfg.d_model)
    assert out.kd_features.shape == (2, 20, cfg.teacher_dim) and out.aux_loss.ndim == 0
    assert out.aux["expert_share"].shape == (cfg.n_layers, cfg.n_experts)
    assert all(torch.isfinite(r).all() for r in out.responses.values())


def test_modalities_of_different_lengths_are_aligned(cfg):
    model = TinyTribe(cfg).eval()
    feats, avail, t0 = make_batch(cfg, B=2, lengths=[24, 24, 12])
    out = model(feats, avail, t0, {"g": grid_for(t0, 24)})
    assert out.gates.shape == (2, 24, 3)


def test_every_parameter_gets_a_gradient(cfg):
    model = TinyTribe(cfg).train()
    model.add_subjects(1)
    feats, avail, t0 = make_batch(cfg, B=4, T=32)
    for block in model.fusion.blocks:  # force routing to every expert: a strong random router spreads tokens
        torch.nn.init.normal_(block.moe.router.weight, std=1.0)
    out = model(feats, avail, t0, {"g": grid_for(t0, 32)}, torch.tensor([0, 1, 2, 3]), return_fused=True)
    assert (out.aux["expert_share"] > 0).all(), "some expert got no tokens"
    loss = out.responses["g"].square().mean() + out.kd_features.square().mean() + out.aux_loss
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has a zero gradient"
    film = model.head.film
    assert (film.gamma.grad.abs().sum(1) > 0).all() and (film.gamma_new.grad.abs().sum(1) > 0).all()


def test_a_masked_modality_changes_nothing(cfg):
    model = TinyTribe(cfg).eval()
    feats, avail, t0 = make_batch(cfg, B=2)
    avail[0, 2] = False  # sample 0: no video
    avail[1, 0] = False  # sample 1: no text
    grids = {"g": grid_for(t0, 24)}
    ref = model(feats, avail, t0, grids, return_fused=True)
    changed = {m: x.clone() for m, x in feats.items()}
    changed["video"][0] = torch.randn_like(changed["video"][0]) * 100
    changed["text"][1] = torch.randn_like(changed["text"][1]) * 100
    out = model(changed, avail, t0, grids, return_fused=True)
    assert torch.equal(out.responses["g"], ref.responses["g"]) and torch.equal(out.fused, ref.fused)
    assert torch.equal(out.aux_loss, ref.aux_loss)
    assert torch.equal(out.gates[0, :, 2], torch.zeros(24))
    avail_all = torch.ones_like(avail)  # the same change matters once the modality is available
    assert not torch.allclose(model(changed, avail_all, t0, grids).responses["g"],
                              model(feats, avail_all, t0, grids).responses["g"])
    with pytest.raises(ValueError, match="at least one available modality"):
        model(feats, torch.zeros_like(avail), t0, grids)


def _trained_like(model: TinyTribe) -> TinyTribe:
    """The motion filter starts at zero (identity): give it weights, so its causal path is exercised."""
    with torch.no_grad():
        model.motion.conv.weight.normal_(0.0, 0.5)
    return model


def test_causal_mode_sees_only_the_past(cfg):
    model = _trained_like(TinyTribe(cfg).eval())
    feats, avail, t0 = make_batch(cfg, B=2, T=20)
    tok, _, _ = model.encode(feats, avail, causal=True)
    changed = {m: x.clone() for m, x in feats.items()}
    for m in changed:  # random noise: a constant shift would be removed by the projectors' LayerNorm
        changed[m][:, 12] += 3.0 * torch.randn_like(changed[m][:, 12])
    tok2, _, _ = model.encode(changed, avail, causal=True)
    torch.testing.assert_close(tok2[:, :12], tok[:, :12], rtol=0, atol=1e-6)
    assert not torch.allclose(tok2[:, 12], tok[:, 12])
    tok3, _, _ = model.encode(changed, avail, causal=False)  # full attention does look ahead
    tok4, _, _ = model.encode(feats, avail, causal=False)
    assert not torch.allclose(tok3[:, :12], tok4[:, :12])


def test_the_whole_model_is_causal_in_time(cfg):
    """Responses at BOLD times before a change in the stimulus do not move (HRF and pooling are causal)."""
    model = _trained_like(TinyTribe(cfg).eval())
    feats, avail, t0 = make_batch(cfg, B=1, T=30)
    grid = {"g": TimeGrid.regular(t0, 15, 1.0)}
    ref = model(feats, avail, t0, grid, causal=True).responses["g"]
    changed = {m: x.clone() for m, x in feats.items()}
    for m in changed:  # stimulus change at t0 + 10 s (noise: a constant would vanish in the LayerNorm)
        changed[m][:, 20:] += torch.randn_like(changed[m][:, 20:])
    out = model(changed, avail, t0, grid, causal=True).responses["g"]
    torch.testing.assert_close(out[:, :10], ref[:, :10], rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, 10:], ref[:, 10:])


def test_aux_loss_is_counted_when_layers_are_dropped(cfg):
    model = TinyTribe(cfg).train()
    feats, avail, t0 = make_batch(cfg, B=2)
    for block in model.fusion.blocks:
        block.drop_prob = 1.0  # every layer's update dropped
    seen = {}
    model.fusion.register_forward_pre_hook(lambda mod, args: seen.update(seq=args[0]))
    tok, _, aux = model.encode(feats, avail)
    # the layers changed nothing: the output is the input through the final LayerNorm
    torch.testing.assert_close(tok.reshape(seen["seq"].shape), model.fusion.ln_f(seen["seq"]))
    assert aux["load_balance"].item() > 0.5 * cfg.n_layers  # yet every layer's term is there
    aux["aux_loss"].backward()
    for l, block in enumerate(model.fusion.blocks):
        assert block.moe.router.weight.grad is not None and block.moe.router.weight.grad.abs().sum() > 0, l


def test_stochastic_depth_schedule(cfg):
    model = TinyTribe(tiny_config(drop_path=0.2))
    assert [b.drop_prob for b in model.fusion.blocks] == pytest.approx([0.05, 0.10, 0.15, 0.20])


def test_determinism_under_a_seed(cfg):
    torch.manual_seed(123)
    a = TinyTribe(cfg).train()
    torch.manual_seed(123)
    b = TinyTribe(cfg).train()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    feats, avail, t0 = make_batch(cfg)
    torch.manual_seed(7)
    ya = a(feats, avail, t0, {"g": grid_for(t0, 24)}, p_modality_dropout=0.5).responses["g"]
    torch.manual_seed(7)
    yb = b(feats, avail, t0, {"g": grid_for(t0, 24)}, p_modality_dropout=0.5).responses["g"]
    assert torch.equal(ya, yb)


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path, cfg):
    model = TinyTribe(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.add_subjects(2)
    save_checkpoint(model, tmp_path / "m.pt", phase="adapt", step=3)
    back, ck = load_checkpoint(tmp_path / "m.pt")
    assert ck.step == 3 and ck.phase == "adapt" and back.config.n_new_subjects == 2 and back.config.n_subjects == 3
    feats, avail, t0 = make_batch(cfg)
    grids = {"g": grid_for(t0, 24)}
    subj = torch.tensor([0, 3, 4])
    assert torch.equal(back(feats, avail, t0, grids, subj).responses["g"], model(feats, avail, t0, grids, subj).responses["g"])
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["n_experts"] = 2  # a config that does not match the weights
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(FormatError, match="bad.pt: weights do not match the saved config"):
        load_checkpoint(tmp_path / "bad.pt")


def test_adding_a_subject_to_a_frozen_model_trains_only_that_subject(cfg):
    """The original subjects' FiLM tensors stay the same objects, and stay frozen."""
    model = TinyTribe(cfg)
    model.requires_grad_(False)
    gamma = model.head.film.gamma
    params = model.add_subjects(1)
    assert model.head.film.gamma is gamma and not gamma.requires_grad
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * cfg.d_model
    model.add_subjects(1)                                      # the first added subject joins the originals
    assert not model.head.film.gamma.requires_grad and model.head.film.gamma.shape[0] == cfg.n_subjects + 1
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * cfg.d_model
    assert params[0] is not model.head.film.gamma_new


def test_new_subjects_start_average_and_train_alone(cfg):
    model = TinyTribe(cfg).eval()
    with torch.no_grad():
        model.head.film.gamma.add_(torch.randn_like(model.head.film.gamma))
        model.head.film.beta.add_(torch.randn_like(model.head.film.beta))
    feats, avail, t0 = make_batch(cfg)
    grids = {"g": grid_for(t0, 24)}
    avg = model(feats, avail, t0, grids, None).responses["g"]
    params = model.add_subjects(2)
    assert [p.shape for p in params] == [(2, cfg.d_model)] * 2 and sum(p.numel() for p in params) == 4 * cfg.d_model
    new = model(feats, avail, t0, grids, torch.tensor([3, 4, 3])).responses["g"]
    torch.testing.assert_close(new, avg)  # a new subject starts as the average subject
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    target = torch.randn_like(new)
    for _ in range(3):
        opt.zero_grad()
        loss = (model(feats, avail, t0, grids, torch.tensor([3, 4, 3])).responses["g"] - target).square().mean()
        loss.backward()
        opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert sorted(changed) == ["head.film.beta_new", "head.film.gamma_new"]
    with pytest.raises(ValueError, match="subject ids must be in 0..4"):
        model(feats, avail, t0, grids, torch.tensor([5, 0, 0]))


def test_every_shipped_config_loads_and_builds():
    names = list_configs()
    assert {"tiny-tribe-v3", "tiny-tribe-demo"} <= set(names)
    for name in names:
        model = create_model(name)
        assert model.config.name == name
    v3 = parameter_table(create_model("tiny-tribe-v3"), DESIGN)
    rows = {r["stage"]: r for r in v3}
    assert rows["transformer"]["total"] == pytest.approx(37.8e6, rel=0.01)  # the design's figures
    assert rows["transformer"]["active"] == pytest.approx(12.6e6, rel=0.01)
    assert rows["temporal embeddings"]["total"] == pytest.approx(3.1e6, rel=0.02)
    assert rows["output projection"]["total"] == 512 * 5124
    assert rows["total"]["total"] == sum(p.numel() for p in create_model("tiny-tribe-v3").parameters())


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="unknown model config 'tiny-tribe-v9'"):
        get_config("tiny-tribe-v9")
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"name": "x", "n_expert": 4}))
    with pytest.raises(ConfigError, match="m.json: unknown key 'n_expert'"):
        get_config(bad)
    with pytest.raises(ConfigError, match="hrf_taps=8 covers 4 s"):
        get_config("tiny-tribe-demo", ["hrf_taps=8"])
    assert get_config("tiny-tribe-demo", ["--model.n_experts=2"]).n_experts == 2
    model = create_model("tiny-tribe-demo", ["max_steps=16"])
    feats, avail, t0 = make_batch(model.config, B=1, T=20)
    with pytest.raises(ValueError, match="longer than max_steps=16"):
        model(feats, avail, t0, {"g": grid_for(t0, 20)})


def test_modality_dropout_never_leaves_a_window_with_only_silent_modalities():
    """Text is available but has no word in the window; dropout must keep video (which has content),
    or the window would have no token at all."""
    from tinytribe.model import create_model

    model = create_model("tiny-tribe-demo", ["model.d_model=32", "model.proj_hidden=32", "model.expert_hidden=32",
                                             "model.n_heads=2", "model.n_layers=1", "model.local_layers=1"]).train()
    T = 12
    feats = {m: torch.randn(1, T, d) for m, d in zip(("text", "audio", "video"), model.config.input_dims)}
    masks = {"text": torch.zeros(1, T, dtype=torch.bool), "audio": torch.zeros(1, T, dtype=torch.bool),
             "video": torch.ones(1, T, dtype=torch.bool)}
    available = torch.tensor([[True, False, True]])
    torch.manual_seed(0)
    for _ in range(20):
        _, step_mask, aux = model.encode(feats, available, masks=masks, p_modality_dropout=0.99)
        assert step_mask[0, :, 2].all() and float(aux["aux_loss"]) > 0
