"""Per-step masks, batching invariance, and the model details a review found untested: which layers
carry the decay bias, the z-loss, the router temperature, per-sample stochastic depth, linear length
alignment, masked modalities never attended to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytribe.formats import MODALITIES
from tinytribe.model import TimeGrid, TinyTribe
from tinytribe.model.moe import MoE
from tinytribe.model.tokens import align_length
from tinytribe.model.transformer import Block

from .conftest import make_batch, tiny_config


def _window(cfg, T, seed):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(1, T, d, generator=g) for m, d in zip(MODALITIES, cfg.input_dims)}


def test_a_window_predicts_the_same_alone_and_batched_beside_a_longer_one(cfg):
    """End padding with masks: the short window's steps keep their positions, and the padding is never
    attended to, pooled or filtered in (the motion filter sees zeros there, as at a window's end)."""
    model = TinyTribe(cfg).eval()
    short, long_ = _window(cfg, 20, 1), _window(cfg, 60, 2)
    grid_short = TimeGrid.regular(torch.tensor([0.0]), 6, 1.49)
    alone = model(short, torch.ones(1, 3, dtype=torch.bool), torch.tensor([0.0]), {"g": grid_short}).responses["g"]
    feats = {m: torch.cat([torch.nn.functional.pad(short[m], (0, 0, 0, 40)), long_[m]]) for m in MODALITIES}
    masks = {m: torch.stack([torch.arange(60) < 20, torch.ones(60, dtype=torch.bool)]) for m in MODALITIES}
    times = torch.cat([grid_short.times, torch.arange(6, dtype=torch.float64)[None] * 1.49 + 10.0])
    batched = model(feats, torch.ones(2, 3, dtype=torch.bool), torch.tensor([0.0, 0.0]), {"g": TimeGrid(times, 1.49)},
                    masks=masks).responses["g"]
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-6)
    unmasked = model(feats, torch.ones(2, 3, dtype=torch.bool), torch.tensor([0.0, 0.0]),
                     {"g": TimeGrid(times, 1.49)}).responses["g"]
    assert (unmasked[:1] - alone).abs().max() > 1e-3              # without the masks the padding leaks in


def test_a_query_with_no_key_gives_zeros_not_nan(cfg):
    """Causal mode with masked steps at the start: the first tokens may attend to nothing."""
    model = TinyTribe(cfg).train()
    feats, avail, t0 = make_batch(cfg, B=2, T=24)
    masks = {m: (torch.arange(24) >= 6).expand(2, 24).clone() for m in MODALITIES}
    out = model(feats, avail, t0, {"g": TimeGrid.regular(t0, 10, 1.0, batch=2)}, causal=True, masks=masks,
                return_fused=True)
    assert torch.isfinite(out.responses["g"]).all() and torch.isfinite(out.fused).all()
    assert (out.fused[:, :6] == 0).all() and (out.gates[:, :6] == 0).all()   # nothing to pool before step 6
    out.responses["g"].square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_decay_bias_is_on_the_first_local_layers_only(cfg):
    model = TinyTribe(cfg).eval()
    assert [b.attention.local for b in model.fusion.blocks] == [True, True, False, False]
    feats, avail, t0 = make_batch(cfg, B=1)
    ref, _, _ = model.encode(feats, avail)
    with torch.no_grad():
        model.fusion.blocks[0].attention.decay_raw.add_(3.0)       # a much faster decay changes the output
    changed, _, _ = model.encode(feats, avail)
    assert not torch.allclose(changed, ref)


def test_the_z_loss_is_counted_on_raw_logits_and_temperature_softens_routing():
    torch.manual_seed(0)
    moe = MoE(16, 32, n_experts=4, top_k=2)
    torch.nn.init.normal_(moe.router.weight, std=1.0)
    x = torch.randn(2, 10, 16)
    _, aux1 = moe(x, temperature=1.0)
    _, aux5 = moe(x, temperature=5.0)
    logits = moe.router(x.reshape(-1, 16))
    expected = torch.logsumexp(logits, dim=-1).square().mean()
    torch.testing.assert_close(aux1["z_loss"], expected)
    torch.testing.assert_close(aux5["z_loss"], expected)           # the temperature does not scale the penalty
    probs5 = (logits / 5.0).softmax(-1)
    lb5 = 4 * (aux5["expert_share"] * probs5.mean(0)).sum()
    torch.testing.assert_close(aux5["load_balance"], lb5)          # routing probabilities use the temperature
    assert not torch.allclose(aux1["load_balance"], aux5["load_balance"])


def test_aux_loss_is_load_balance_plus_a_tenth_of_the_z_loss(cfg):
    model = TinyTribe(cfg).eval()
    feats, avail, t0 = make_batch(cfg)
    _, _, aux = model.encode(feats, avail)
    assert aux["z_loss"] > 0
    torch.testing.assert_close(aux["aux_loss"], aux["load_balance"] + 0.1 * aux["z_loss"])


def test_stochastic_depth_drops_per_sample_and_rescales_the_survivors(cfg):
    from tinytribe.model.attention import Attention

    torch.manual_seed(0)
    block = Block(attention=Attention(32, 4), moe=MoE(32, 48, 4, 2), d_model=32, drop_prob=0.5)
    x = torch.randn(64, 6, 32)
    mask_bias = torch.zeros(1, 1, 6, 6)
    dist = torch.zeros(6, 6)
    tokens = torch.ones(64, 6, dtype=torch.bool)
    full, _ = block.eval()(x, mask_bias, dist, tokens)
    torch.manual_seed(1)
    y, _ = block.train()(x, mask_bias, dist, tokens)
    update, kept = (y - x), (full - x)
    dropped = update.abs().amax(dim=(1, 2)) == 0
    assert 16 < dropped.sum() < 48                                 # drawn per sample, about half
    torch.testing.assert_close(update[~dropped], 2.0 * kept[~dropped], rtol=1e-5, atol=1e-6)   # 1 / (1 - p)


def test_length_alignment_is_linear_interpolation():
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    out = align_length(x, 19)
    src = np.linspace(0, 1, 7)
    dst = np.linspace(0, 1, 19)
    ref = np.stack([[np.interp(dst, src, x[b, :, d].numpy()) for d in range(3)] for b in range(2)]).transpose(0, 2, 1)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_an_unavailable_modality_is_never_attended_to(cfg):
    """Its input is zeroed, but its tokens still exist (projector bias, embeddings): changing those
    must change nothing for the others when the modality is unavailable."""
    model = TinyTribe(cfg).eval()
    feats, avail, t0 = make_batch(cfg, B=2)
    avail[:, 2] = False
    grids = {"g": TimeGrid.regular(t0, 8, 1.49, batch=2)}
    ref = model(feats, avail, t0, grids).responses["g"]
    with torch.no_grad():
        model.embeddings.kind[2].add_(5.0 * torch.randn(cfg.d_model))   # the video tokens change
    assert torch.equal(model(feats, avail, t0, grids).responses["g"], ref)
    assert not torch.allclose(model(feats, torch.ones_like(avail), t0, grids).responses["g"], ref)


def test_partly_covered_targets_and_untrained_lengths_warn(cfg):
    model = TinyTribe(tiny_config(trained_steps=20)).eval()
    feats, avail, t0 = make_batch(cfg, B=1, T=24)
    with pytest.warns(UserWarning, match="longer than the longest trained one .20."):
        model(feats, avail, t0, {"g": TimeGrid.regular(t0, 4, 1.49)})
    with pytest.warns(UserWarning, match=r"partly outside the features, e.g. the one at 21.000 s .*: 67% of its 1.5 s"):
        TinyTribe(cfg).eval()(feats, avail, t0, {"g": TimeGrid(torch.tensor([[10.0, 21.0]], dtype=torch.float64), 1.5)})


def test_the_speed_benchmark_asks_for_every_tr_of_its_window():
    from tinytribe.eval.speed import trs_in

    assert trs_in(150.0) == 100 and trs_in(149.0) == 100 and trs_in(148.9) == 99   # 100 x 1.49 s = 149 s
    assert trs_in(2.98) == 2


def test_attention_gives_exactly_zero_to_a_query_with_no_key():
    """Whatever the attention kernel does with an all -inf row, the layer's output there is 0 (its
    output projection has a bias: without the zeroing it would not be)."""
    from tinytribe.model.attention import Attention

    torch.manual_seed(0)
    att = Attention(16, 4)
    torch.nn.init.normal_(att.out.bias)
    x = torch.randn(1, 5, 16, requires_grad=True)
    allowed = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    allowed[..., 0, :] = False                                        # query 0 may attend to nothing
    has_key = allowed.any(-1, keepdim=True)
    bias = torch.zeros(allowed.shape).masked_fill(~allowed & has_key, float("-inf"))
    y = att(x, (bias, has_key[:, 0]), torch.zeros(5, 5))
    assert torch.isfinite(bias).all() and (y[0, 0] == 0).all() and (y[0, 1:] != 0).any()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_masked_modality_queries_go_through_the_experts_outside_the_statistics():
    """Phase 1's masked reconstruction reads the tokens of a hidden modality: they must have had their
    feed-forward (the MoE), while the routing statistics stay those of the visible tokens."""
    cfg = tiny_config(n_layers=1, local_layers=0, dropout=0.0, drop_path=0.0)
    model = TinyTribe(cfg).eval()
    feats, _, _ = make_batch(cfg, B=2, T=16)
    available = torch.ones(2, 3, dtype=torch.bool)
    masked = torch.tensor([[True, False, False], [False, False, True]])   # text of sample 0, video of sample 1
    with torch.no_grad():
        tokens, step_mask, aux, projected = model.encode(feats, available, masked=masked, return_projected=True)
        hidden, _, aux_hidden = model.encode(feats, available & ~masked)   # the same visible tokens, nothing hidden
        moe = model.fusion.blocks[0].moe
        moe.b2.add_(torch.randn_like(moe.b2))   # every routed token's update moves; unrouted ones do not
        moved, _, _ = model.encode(feats, available, masked=masked)
    assert aux["query_mask"][0, :, 0].all() and aux["query_mask"][1, :, 2].all() and aux["query_mask"].sum() == 32
    assert not step_mask[0, :, 0].any() and not step_mask[1, :, 2].any()   # hidden tokens are no keys
    assert (moved[0, :, 0] - tokens[0, :, 0]).abs().amin() > 1e-4          # hidden text went through the experts
    # the statistics count the visible tokens only: those of a run where the hidden modalities are simply absent
    torch.testing.assert_close(aux["load_balance"], aux_hidden["load_balance"])
    torch.testing.assert_close(aux["expert_share"], aux_hidden["expert_share"])
    torch.testing.assert_close(tokens[step_mask], hidden[step_mask])      # visible tokens: as if nothing were hidden
    # the reconstruction targets are the projector outputs of the real features, hidden ones included
    for i, m in enumerate(MODALITIES):
        torch.testing.assert_close(projected[m], model.projectors[i](feats[m]))
    with pytest.raises(ValueError, match="masked hides every available modality"):
        model.encode(feats, available, masked=torch.ones(2, 3, dtype=torch.bool))
