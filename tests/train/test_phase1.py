"""Phase 1's tasks on hand-built inputs (masks, chunk swaps, contrastive pairing, next-step alignment,
detached targets, the causal pass), and the recipe on the demo study."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytribe.train.losses import selfsup as S


def test_masking_hides_0_1_or_2_modalities_never_all_and_only_present_ones():
    g = torch.Generator().manual_seed(0)
    content = torch.tensor([[True, True, True]] * 4000 + [[True, False, True]] * 1000 + [[False, False, True]] * 100)
    hidden = S.draw_masked(content, g)
    assert not (hidden & ~content).any()                     # only modalities a sample has
    assert ((content & ~hidden).sum(1) >= 1).all()           # never all of them
    counts = hidden[:4000].sum(1)
    frac = [(counts == k).float().mean().item() for k in range(3)]
    np.testing.assert_allclose(frac, [0.25, 0.5, 0.25], atol=0.03)
    assert hidden[4000:5000].sum(1).max() == 1 and not hidden[5000:].any()   # capped at all but one


def test_swapped_chunks_are_really_swapped_and_labelled():
    g = torch.Generator().manual_seed(3)
    T = 10   # chunks of 2, 2, 2 and 4 steps
    x = torch.arange(T).repeat(64, 1)[..., None].float()
    out, order, labels = S.swap_chunks(x, 4, g)
    bounds = [(0, 2), (2, 4), (4, 6), (6, 10)]
    for b in range(64):
        want = torch.cat([torch.arange(*bounds[k]) for k in order[b].tolist()]).float()
        assert torch.equal(out[b, :, 0], want)
        assert sorted(order[b].tolist()) == [0, 1, 2, 3]
        moved = [j for j in range(4) if order[b, j] != j]
        for j in moved:   # a chunk moves one place at most: adjacent swaps only
            assert abs(order[b, j].item() - j) == 1
        assert labels[b].tolist() == [int(order[b, j + 1] == order[b, j] + 1) for j in range(3)]
    assert 0 < labels.float().mean() < 1 and (order != torch.arange(4)).any()


def test_contrastive_pairs_modalities_of_a_step_and_keeps_near_steps_out_of_the_negatives():
    B, T, M, E = 2, 12, 3, 8
    z = torch.nn.functional.normalize(torch.randn(B, T, M, E), dim=-1)
    valid = torch.ones(B, T, M, dtype=torch.bool)
    # a perfect embedding: every modality of (b, t) is the same unit vector, distinct across (b, t)
    base = torch.nn.functional.normalize(torch.randn(B, T, E) * 3, dim=-1)
    perfect = base[:, :, None].expand(B, T, M, E)
    loss, r1 = S.contrastive(perfect, valid, tau=0.07, gap_steps=2)
    assert r1 == 1.0 and loss < 0.05
    # neighbouring steps identical to the positive: with them excluded from the negatives it still works
    smooth = base.repeat_interleave(3, dim=1)[:, :T][:, :, None].expand(B, T, M, E)
    loss_gap, r1_gap = S.contrastive(smooth, valid, tau=0.07, gap_steps=2)
    loss_no_gap, _ = S.contrastive(smooth, valid, tau=0.07, gap_steps=0)
    assert r1_gap == 1.0 and loss_gap < loss_no_gap - 0.2   # (1 is chance: the near duplicates would cost a third)
    # an invalid (masked) token is never a candidate
    only = valid.clone()
    only[:, :, 2] = False
    loss2, _ = S.contrastive(z, only, tau=0.07, gap_steps=2)
    z2 = z.clone()
    z2[:, :, 2] = torch.randn_like(z2[:, :, 2])
    assert torch.allclose(loss2, S.contrastive(z2, only, tau=0.07, gap_steps=2)[0])


def test_next_step_compares_t_with_t_plus_1_and_reconstruction_detaches_its_target():
    pred = torch.randn(1, 5, 4, requires_grad=True)
    target = pred.detach().roll(1, dims=1).clone().requires_grad_(True)   # target[t + 1] == pred[t]
    valid = torch.ones(1, 5, dtype=torch.bool)
    loss, cos = S.next_step(pred, target, valid)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and float(cos) == pytest.approx(1.0)
    loss.backward()
    assert target.grad is None   # the target is detached
    tgt = torch.randn(1, 5, 4, requires_grad=True)
    loss, _ = S.reconstruction(torch.randn(1, 5, 4, requires_grad=True), tgt, torch.tensor([[True, False, True, False, False]]))
    loss.backward()
    assert tgt.grad is None


def test_the_causal_pass_never_sees_the_future():
    from tinytribe.model import TinyTribe
    from tinytribe.model.config import ModelConfig

    torch.manual_seed(0)
    model = TinyTribe(ModelConfig(d_model=32, proj_hidden=32, expert_hidden=32, n_heads=2, n_layers=2,
                                  local_layers=1, n_experts=4, max_steps=64, dropout=0.0, drop_path=0.0)).eval()
    feats = {m: torch.randn(1, 20, d) for m, d in zip(("text", "audio", "video"), model.config.input_dims)}
    later = {m: x.clone() for m, x in feats.items()}
    for x in later.values():
        x[:, 12:] = torch.randn_like(x[:, 12:])
    available = torch.ones(1, 3, dtype=torch.bool)
    masked = torch.tensor([[False, True, False]])
    with torch.no_grad():
        a, _, _ = model.encode(feats, available, causal=True, masked=masked)
        b, _, _ = model.encode(later, available, causal=True, masked=masked)
        c, _, _ = model.encode(later, available, causal=False, masked=masked)
    torch.testing.assert_close(a[:, :12], b[:, :12])          # steps before 12 never see steps from 12 on
    assert (a[:, :12] - c[:, :12]).abs().max() > 1e-4        # (the non-causal pass does)


def test_phase1_trains_on_the_demo_corpus_and_stops_when_its_target_collapses(demo_study, tmp_path, tiny):
    from tinytribe.train import phase1
    from tinytribe.train.logs import read_log

    run = phase1.setup([demo_study], tmp_path / "ssl", overrides=tiny + ["loop.max_steps=4", "loop.batch_size=8",
                                                                       "loop.device=cpu"])
    assert run.train(progress=False).status == "done"
    log = read_log(tmp_path / "ssl" / "train_log.csv")
    for k in ("recon", "contrast", "next", "order", "aux", "recon_cos", "r_at_1", "target_var_video"):
        assert np.isfinite(log[k]).all(), k
    from tinytribe.formats import Checkpoint

    ck = Checkpoint.load(tmp_path / "ssl" / "checkpoints" / "last.pt")
    assert ck.phase == "selfsup" and "recon_text.1.weight" in ck.heads_state["heads"]
    # a projector whose output is a constant: the run stops, naming it
    broken = phase1.setup([demo_study], tmp_path / "broken", overrides=tiny + ["loop.max_steps=4", "loop.batch_size=8",
                                                                             "loop.device=cpu"])
    last_norm = [m for m in broken.model.projectors[2].modules() if isinstance(m, torch.nn.LayerNorm)][-1]
    with torch.no_grad():
        last_norm.weight.zero_()   # the video projector's output is its bias, whatever the input
    res = broken.train(progress=False)
    assert res.status == "collapse" and "the video projector's outputs collapsed to a constant" in res.message
