"""Phase 2 loss terms: what they average over, their values on known inputs, and the tensor space map
against the numpy one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tinytribe.spaces import reduce_space
from tinytribe.train.losses.kd import SpaceReduction, feature_loss, kd_terms, masked_mse, temporal_loss


@pytest.mark.parametrize("source,target", [("fsaverage4", "schaefer-400"), ("fsaverage5", "schaefer-1000"),
                                           ("fsaverage5", "fsaverage4"), ("fsaverage4", "fsaverage4")])
def test_space_reduction_matches_reduce_space(source, target):
    from tinytribe.formats import space_size

    x = np.random.default_rng(0).standard_normal((2, 3, space_size(source))).astype(np.float32)
    got = SpaceReduction.between(source, target)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reduce_space(x, source, target), rtol=1e-5, atol=1e-6)


def _fake(B=2, K=6, V=5, M=4, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(B, K, V, generator=g), torch.randn(B, K, V, generator=g)
    kd, acts = torch.randn(B, M, D, generator=g), torch.randn(B, M, D, generator=g)
    out = SimpleNamespace(responses={"teacher": student}, kd={"fusion_l4": kd}, aux_loss=torch.tensor(0.5))
    batch = {"teacher": teacher, "teacher_valid": torch.ones(B, K, dtype=torch.bool),
             "teacher_acts": {"fusion_l4": acts}, "teacher_acts_valid": {"fusion_l4": torch.ones(B, M, dtype=torch.bool)}}
    return out, batch


def test_padding_rows_and_medial_outputs_do_not_count():
    out, batch = _fake()
    cortex = torch.tensor([True, True, False, True, True])
    clean = kd_terms(out, batch, cortex=cortex)
    # the same batch with two padded rows of garbage at the end of item 1 and garbage on the medial wall
    out2, batch2 = _fake()
    out2.responses["teacher"] = torch.cat([out.responses["teacher"], 50 * torch.ones(2, 2, 5)], dim=1)
    batch2["teacher"] = torch.cat([batch["teacher"], -50 * torch.ones(2, 2, 5)], dim=1)
    batch2["teacher_valid"] = torch.cat([batch["teacher_valid"], torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    out2.responses["teacher"][..., 2] = 1e3
    out2.kd["fusion_l4"] = torch.cat([out.kd["fusion_l4"], torch.ones(2, 1, 3)], dim=1)
    batch2["teacher_acts"]["fusion_l4"] = torch.cat([batch["teacher_acts"]["fusion_l4"], -torch.ones(2, 1, 3)], dim=1)
    batch2["teacher_acts_valid"]["fusion_l4"] = torch.cat([batch["teacher_acts_valid"]["fusion_l4"],
                                                           torch.zeros(2, 1, dtype=torch.bool)], dim=1)
    padded = kd_terms(out2, batch2, cortex=cortex)
    for k in ("kd", "temporal", "feature"):
        torch.testing.assert_close(padded[k], clean[k])
    assert clean["aux"] == 0.5 and "multires" not in clean


def test_values_on_known_inputs():
    x = torch.randn(1, 8, 4)
    rows = torch.ones(1, 8, dtype=torch.bool)
    assert masked_mse(x, x, rows) == 0 and temporal_loss(x, x, rows) == 0
    assert masked_mse(x + 2.0, x, rows) == pytest.approx(4.0)
    assert temporal_loss(x + 2.0, x, rows) == pytest.approx(0.0, abs=1e-12), "a constant offset has the teacher's dynamics"
    ramp = torch.arange(8.0)[None, :, None].expand(1, 8, 4)
    assert temporal_loss(ramp, torch.zeros_like(ramp), rows) == pytest.approx(0.5), "SmoothL1 of unit steps"
    e = torch.eye(3)[None]
    assert feature_loss(e, e, torch.ones(1, 3, dtype=torch.bool)) == pytest.approx(0.0, abs=1e-6)
    assert feature_loss(e, e.roll(1, dims=1), torch.ones(1, 3, dtype=torch.bool)) == pytest.approx(1.0)
    assert feature_loss(2 * e, -e, torch.ones(1, 3, dtype=torch.bool)) == pytest.approx(2.0)


def test_temporal_pairs_need_both_rows_valid():
    x, y = torch.zeros(1, 4, 1), torch.zeros(1, 4, 1)
    x[0, 2] = 10.0   # a jump into and out of row 2
    rows = torch.tensor([[True, True, False, True]])
    assert temporal_loss(x, y, rows) == 0, "no pair of valid neighbours spans row 2"
    assert temporal_loss(x, y, torch.ones(1, 4, dtype=torch.bool)) > 0


def test_a_batch_term_is_the_mean_of_its_items_when_they_hold_as_many_rows():
    out, batch = _fake(B=4)
    cortex = torch.ones(5, dtype=torch.bool)
    parcels = SpaceReduction("parcels", np.array([1, 1, 2, 0, 2]), 2)
    whole = kd_terms(out, batch, cortex=cortex, parcels=parcels)
    per_item = []
    for b in range(4):
        o = SimpleNamespace(responses={"teacher": out.responses["teacher"][b:b + 1]},
                            kd={"fusion_l4": out.kd["fusion_l4"][b:b + 1]}, aux_loss=out.aux_loss)
        bb = {"teacher": batch["teacher"][b:b + 1], "teacher_valid": batch["teacher_valid"][b:b + 1],
              "teacher_acts": {"fusion_l4": batch["teacher_acts"]["fusion_l4"][b:b + 1]},
              "teacher_acts_valid": {"fusion_l4": batch["teacher_acts_valid"]["fusion_l4"][b:b + 1]}}
        per_item.append(kd_terms(o, bb, cortex=cortex, parcels=parcels))
    for k in ("kd", "temporal", "feature", "multires"):
        torch.testing.assert_close(whole[k], torch.stack([t[k] for t in per_item]).mean())


def test_a_teacher_in_another_space_needs_a_map():
    out, batch = _fake(V=5)
    batch["teacher"] = torch.randn(2, 6, 7)
    with pytest.raises(ValueError, match="teacher predictions have 7 outputs, the student 5"):
        kd_terms(out, batch, cortex=torch.ones(5, dtype=torch.bool))
    mapped = kd_terms(out, batch, cortex=torch.ones(5, dtype=torch.bool),
                      teacher_map=SpaceReduction("select", np.array([0, 1, 2, 3, 4]), 5))
    assert torch.isfinite(mapped["kd"])
