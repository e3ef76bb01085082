"""Layer by layer: shapes, references computed another way, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinytribe.model.attention import Attention, step_distance_s
from tinytribe.model.film import OutputHead
from tinytribe.model.hrf import HRFConv, double_gamma
from tinytribe.model.moe import MoE
from tinytribe.model.pooling import GatedModalityPool
from tinytribe.model.projector import ModalityProjector, MotionModule
from tinytribe.model.timegrid import TimeGrid, overlap_weights
from tinytribe.model.tokens import interleave, modality_dropout


@pytest.mark.parametrize("d_in,d_hidden,d_model", [(384, 768, 512), (12, 8, 16), (1280, 64, 32)])
def test_projector_shapes(d_in, d_hidden, d_model):
    p = ModalityProjector(d_in, d_hidden, d_model)
    assert p(torch.randn(2, 7, d_in)).shape == (2, 7, d_model)
    n = sum(x.numel() for x in p.parameters())
    assert n == 2 * d_in + d_in * d_hidden + d_hidden + d_hidden * d_hidden + d_hidden + d_hidden * d_model + d_model + 2 * d_model


def test_motion_module_starts_as_identity_and_causal_mode_ignores_the_future():
    m = MotionModule(8)
    x = torch.randn(2, 10, 8)
    assert torch.equal(m(x), x)
    torch.nn.init.normal_(m.conv.weight)
    y = m(x, causal=True)
    x2 = x.clone()
    x2[:, 6] += 5.0
    y2 = m(x2, causal=True)
    assert torch.equal(y[:, :6], y2[:, :6]) and not torch.allclose(y[:, 6], y2[:, 6])
    assert not torch.equal(m(x)[:, 5], m(x2)[:, 5])  # the non-causal filter does look ahead one step


def naive_attention(att: Attention, x: torch.Tensor, allowed: torch.Tensor, n_mod: int, rate: float) -> torch.Tensor:
    """Loop-by-loop reference: softmax(q.k / sqrt(d) - alpha |t_i - t_j|) v over allowed keys."""
    B, L, D = x.shape
    H = att.n_heads
    dh = D // H
    qkv = x @ att.qkv.weight.T + att.qkv.bias
    out = torch.zeros(B, L, D)
    alpha = att.alpha.item() if att.local else 0.0
    for b in range(B):
        for h in range(H):
            q = qkv[b, :, h * dh:(h + 1) * dh]
            k = qkv[b, :, D + h * dh:D + (h + 1) * dh]
            v = qkv[b, :, 2 * D + h * dh:2 * D + (h + 1) * dh]
            for i in range(L):
                logits = torch.tensor([
                    (q[i] @ k[j]).item() / math.sqrt(dh) - alpha * abs(i // n_mod - j // n_mod) / rate
                    if allowed[b, i, j] else -math.inf for j in range(L)])
                out[b, i, h * dh:(h + 1) * dh] = logits.softmax(0) @ v
    return out @ att.out.weight.T + att.out.bias


@pytest.mark.parametrize("local", [True, False])
def test_attention_with_decay_bias_matches_a_naive_loop(local):
    torch.manual_seed(1)
    att = Attention(16, 2, local=local, decay_scale_s=6.0).eval()
    if local:
        assert att.alpha.item() == pytest.approx(1 / 6)
        with torch.no_grad():
            att.decay_raw.fill_(0.7)  # a larger alpha, so the bias matters in the comparison
    B, T, M, rate = 2, 5, 3, 2.0
    x = torch.randn(B, T * M, 16)
    token_ok = torch.ones(B, T * M, dtype=torch.bool)
    token_ok[1, 2::3] = False  # sample 1 has no video
    allowed = token_ok[:, None, :].expand(B, T * M, T * M)
    bias = torch.zeros(B, 1, T * M, T * M).masked_fill(~allowed[:, None], float("-inf"))
    got = att(x, bias, step_distance_s(T, M, rate))
    want = naive_attention(att, x, allowed, M, rate)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_decay_distance_is_in_seconds():
    d = step_distance_s(4, 3, 2.0)
    assert d.shape == (12, 12)
    assert d[0, 2] == 0 and d[0, 3] == 0.5 and d[1, 11] == 1.5 and torch.equal(d, d.T)


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    for n, tok in enumerate(x):
        p = (moe.router.weight @ tok).softmax(0)
        top_p, top_e = p.topk(moe.top_k)
        for w, e in zip(top_p / top_p.sum(), top_e):
            out[n] += w * (F.gelu(tok @ moe.w1[e] + moe.b1[e]) @ moe.w2[e] + moe.b2[e])
    return out


def test_moe_matches_per_token_reference_and_masks():
    moe = MoE(16, 24, n_experts=4, top_k=2, init_noise=0.01)
    x = torch.randn(2, 9, 16)
    y, aux = moe(x)
    torch.testing.assert_close(y.reshape(-1, 16), naive_moe(moe, x.reshape(-1, 16)), atol=1e-5, rtol=1e-4)
    assert aux["expert_share"].sum().item() == pytest.approx(1.0) and aux["load_balance"] > 0 and aux["z_loss"] > 0
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :4] = False
    ym, _ = moe(x, mask)
    assert torch.equal(ym[0, :4], torch.zeros(4, 16))
    torch.testing.assert_close(ym[mask], y[mask])


def test_moe_experts_start_from_one_ffn_with_small_noise():
    moe = MoE(64, 128, n_experts=8, top_k=2, init_noise=0.01)
    diff = moe.w1[1:] - moe.w1[:1]
    assert diff.std().item() == pytest.approx(0.01 * math.sqrt(2), rel=0.05)  # two independent noises
    assert torch.equal(moe.b1[0], moe.b1[5])


def test_load_balance_is_one_when_balanced():
    moe = MoE(8, 8, n_experts=4, top_k=1)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(4, 8) * 10)
    x = torch.zeros(4, 1, 8)
    for i in range(4):
        x[i, 0, i] = 1.0  # token i goes to expert i
    _, aux = moe(x)
    assert torch.equal(aux["expert_share"], torch.full((4,), 0.25))
    assert aux["load_balance"].item() == pytest.approx(1.0, abs=1e-3)


def test_modality_dropout_never_drops_everything():
    gen = torch.Generator().manual_seed(0)
    available = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]] * 500, dtype=torch.bool)
    keep = modality_dropout(available, 0.9, gen)
    assert not (keep & ~available).any()  # never adds a modality
    assert keep.any(dim=1).all()  # never drops all available ones
    assert torch.equal(modality_dropout(available, 0.0), available)
    # expected kept per row with n available: n(1 - p) + p^n (a fully dropped row keeps one)
    expected_kept = sum(n * 0.1 + 0.9 ** n for n in (3, 2, 1, 2))
    assert keep.sum().item() / 500 == pytest.approx(expected_kept, rel=0.03)


def test_interleave_order():
    t, a, v = (torch.full((1, 2, 1), float(i)) for i in range(3))
    assert interleave([t, a, v]).flatten().tolist() == [0, 1, 2, 0, 1, 2]


def test_gated_pool_ignores_unavailable_and_sums_to_one():
    pool = GatedModalityPool(8, 3)
    torch.nn.init.normal_(pool.gate.weight)
    tokens = torch.randn(2, 5, 3, 8)
    available = torch.tensor([[1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    out, gates = pool(tokens, available)
    assert out.shape == (2, 5, 8) and gates.shape == (2, 5, 3)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5))
    assert torch.equal(gates[1, :, 1], torch.zeros(5))
    tokens2 = tokens.clone()
    tokens2[1, :, 1] = float("nan")
    out2, _ = pool(tokens2, available)
    torch.testing.assert_close(out2, out)
    assert torch.allclose(GatedModalityPool(8, 3)(tokens, available)[1][0], torch.full((5, 3), 1 / 3))


def test_hrf_init_is_the_double_gamma_at_the_feature_rate_and_covers_16s():
    hrf = HRFConv(4, taps=33, rate_hz=2.0)
    k = hrf.kernel()
    t = np.arange(33) / 2.0
    from scipy.stats import gamma

    ref = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    np.testing.assert_allclose(k[0].detach().numpy(), ref / ref.sum(), rtol=1e-5, atol=1e-7)
    assert k[0].argmax().item() / 2.0 == 5.0  # peak at 5 s (mode of gamma(6) is 5 s)
    assert k[0, 30].item() < 0  # the undershoot is inside the kernel


def test_hrf_matches_nilearn_spm_hrf_in_shape():
    """nilearn's SPM HRF, on its own grid (linspace(0, 32, n), 0.04 s apart), shifts both gammas by one
    sample (loc = dt) and uses ratio 0.167 for 1/6. Compared after scaling both to peak 1: with that
    shift applied to ours they agree within 0.001 of the peak; without it, within 0.02."""
    from nilearn.glm.first_level import spm_hrf

    oversampling, tr = 50, 2.0
    dt = tr / oversampling
    ref = spm_hrf(tr, oversampling=oversampling)
    t = np.linspace(0, 32.0, np.rint(32.0 / dt).astype(int))
    ref = ref / ref.max()
    shifted = double_gamma(torch.from_numpy(t - dt)).numpy()
    plain = double_gamma(torch.from_numpy(t)).numpy()
    assert np.abs(ref - shifted / shifted.max()).max() < 1e-3
    assert np.abs(ref - plain / plain.max()).max() < 0.02
    assert abs(t[ref.argmax()] - t[plain.argmax()]) < 0.1


def test_hrf_conv_is_causal():
    hrf = HRFConv(6, taps=33, rate_hz=2.0)
    x = torch.randn(2, 50, 6)
    y = hrf(x)
    x2 = x.clone()
    x2[:, 20] += 3.0
    y2 = hrf(x2)
    assert torch.equal(y[:, :20], y2[:, :20])
    delta = (y2 - y)[0, :, 0]
    assert delta[20:].abs().max() > 0 and delta[20 + 10].item() == pytest.approx(3.0 * hrf.kernel()[0, 10].item(), rel=1e-4)


def test_overlap_weights_match_a_naive_reference():
    t0 = torch.tensor([0.0, 3.25])
    grid = TimeGrid(torch.tensor([[0.0, 1.49, 2.98], [4.0, 5.49, float("nan")]]), 1.49)
    W = overlap_weights(t0, 12, 2.0, grid)
    assert W.shape == (2, 3, 12)
    for b in range(2):
        for n in range(3):
            tau = grid.times[b, n].item()
            if math.isnan(tau):
                assert W[b, n].sum() == 0
                continue
            s0 = t0[b].item()
            ov = [max(0.0, min(s0 + (i + 1) / 2, tau + 1.49) - max(s0 + i / 2, tau)) for i in range(12)]
            np.testing.assert_allclose(W[b, n].numpy(), np.array(ov) / sum(ov), atol=1e-6)
    with pytest.raises(ValueError, match="target sample at 40.000 s"):
        overlap_weights(t0, 12, 2.0, TimeGrid(torch.tensor([[40.0], [4.0]]), 1.0))


def test_film_identity_equals_unconditioned_head_and_pooling_before_projection():
    head = OutputHead(16, 30, n_subjects=3)
    x = torch.randn(2, 10, 16)
    plain = F.gelu(head.mlp(head.norm(x)))
    torch.testing.assert_close(head.condition(x, torch.tensor([0, 2])), plain)
    torch.testing.assert_close(head.condition(x, None), plain)
    W = overlap_weights(torch.zeros(2), 10, 2.0, TimeGrid.regular(0.5, 3, 1.49, batch=2))
    h = head.condition(x, torch.tensor([1, 1]))
    torch.testing.assert_close(head.project(h, W), W @ head.proj(h), atol=1e-5, rtol=1e-5)


def test_regular_grid_stays_on_the_device_of_its_start():
    """Found on a GPU: a CUDA start time and a CPU arange did not mix. The meta device stands in here."""
    g = TimeGrid.regular(torch.zeros(2, device="meta"), 5, 1.49, batch=2)
    assert g.times.device.type == "meta" and g.times.shape == (2, 5)
