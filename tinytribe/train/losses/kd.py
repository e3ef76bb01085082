"""Phase 2 distillation terms against the cached teacher (design, "Phase 2 -- KD").

Every term is a mean over what is really there: teacher rows marked valid (a window's padding and
teacher-less windows are not), cortical outputs (the medial wall is constant), activation rows marked
valid. In a batch whose items hold equally many valid rows each, every term is the mean of its items'
terms -- what makes gradients of a batch split over processes (DDP) equal those of the whole batch.

    terms = kd_terms(out, batch, cortex=cortex, parcels=SpaceReduction.between("fsaverage4", "schaefer-400"))
    loss = 0.6 * terms["kd"] + 0.2 * terms["feature"] + 0.1 * terms["temporal"] + ...
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinytribe.formats import space_size


class SpaceReduction(nn.Module):
    """:func:`tinytribe.spaces.reduce_space` on tensors (differentiable): (..., V_source) -> (..., V_target).

    Args:
        kind, index: as :func:`tinytribe.spaces.reduction` returns them.
        n_target: outputs of the target space.
    """

    def __init__(self, kind: str, index, n_target: int):
        super().__init__()
        self.kind, self.n_target = kind, n_target
        self.register_buffer("index", torch.tensor(np.asarray(index if index is not None else [], np.int64)),
                             persistent=False)
        if kind == "parcels":
            counts = torch.bincount(self.index, minlength=n_target + 1)[1:].clamp(min=1)
            self.register_buffer("counts", counts.float(), persistent=False)

    @classmethod
    def between(cls, source: str, target: str) -> SpaceReduction:
        from tinytribe.spaces import reduction

        kind, index = reduction(source, target)
        return cls(kind, index, space_size(target))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "same":
            return x
        if self.kind == "select":
            return x[..., self.index]
        x = x.float()
        sums = x.new_zeros(*x.shape[:-1], self.n_target + 1).index_add_(x.ndim - 1, self.index, x)
        return sums[..., 1:] / self.counts  # (..., n_target)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, rows: torch.Tensor, outputs: torch.Tensor | None = None
               ) -> torch.Tensor:
    """Mean squared error over valid rows (B, N) and chosen outputs (V,) of (B, N, V) tensors."""
    if outputs is not None:
        pred, target = pred[..., outputs], target[..., outputs]
    err = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    return (err * rows).sum() / rows.sum().clamp(min=1)


def temporal_loss(pred: torch.Tensor, target: torch.Tensor, rows: torch.Tensor, outputs: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """SmoothL1 between successive differences of student and teacher, over pairs of valid rows."""
    if outputs is not None:
        pred, target = pred[..., outputs], target[..., outputs]
    ds, dt = pred.float().diff(dim=1), target.float().diff(dim=1)  # (B, N-1, V)
    pairs = rows[:, 1:] & rows[:, :-1]  # (B, N-1)
    err = F.smooth_l1_loss(ds, dt, reduction="none").mean(dim=-1)
    return (err * pairs).sum() / pairs.sum().clamp(min=1)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """1 - cosine of the KD head's features and the teacher's activations (B, M, D), over valid rows."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-6)  # (B, M)
    return ((1.0 - cos) * rows).sum() / rows.sum().clamp(min=1)


def kd_terms(out, batch: dict, *, cortex: torch.Tensor, activation: str | None = "fusion_l4",
             teacher_map: SpaceReduction | None = None, parcels: SpaceReduction | None = None
             ) -> dict[str, torch.Tensor]:
    """The unweighted Phase 2 terms of one forward pass.

    Args:
        out: the model's :class:`~tinytribe.model.tinytribe.TinyTribeOutput`, run with the batch's
            ``teacher`` grid among its grids and its ``kd_grids``.
        batch: a :func:`~tinytribe.data.windows.collate` batch on the model's device.
        cortex: (V,) bool outputs of the model's space that count.
        activation: the teacher activation the KD head is compared with (None: no feature term).
        teacher_map: maps teacher predictions into the model's space when they differ (the sprint's
            fsaverage4 teacher onto its Schaefer-1000 student).
        parcels: maps the model's outputs onto coarser parcels for the multi-resolution term; None
            leaves that term out (a parcel space already is coarse).

    Returns:
        ``kd`` (MSE to the teacher's predictions), ``temporal``, ``feature`` (with ``activation``), ``multires`` (when
        ``parcels``) and ``aux`` (the MoE's auxiliary loss).
    """
    student = out.responses["teacher"]  # (B, K, V)
    teacher = batch["teacher"].to(student.device)
    if teacher_map is not None:
        teacher = teacher_map(teacher.float())  # (B, K, V)
    if teacher.shape[-1] != student.shape[-1]:
        raise ValueError(f"teacher predictions have {teacher.shape[-1]} outputs, the student {student.shape[-1]}: "
                         f"give a teacher_map from the teacher's space to the student's")
    rows = batch["teacher_valid"].to(student.device)  # (B, K)
    terms = {"kd": masked_mse(student, teacher, rows, cortex),
             "temporal": temporal_loss(student, teacher, rows, cortex)}
    if activation is not None:
        if activation not in out.kd:
            raise ValueError(f"no KD features for teacher activation {activation!r}: run the model with kd_grids "
                             f"(the batch has {sorted(batch.get('kd_grids', {}))})")
        terms["feature"] = feature_loss(out.kd[activation], batch["teacher_acts"][activation].to(student.device),
                                        batch["teacher_acts_valid"][activation].to(student.device))
    if parcels is not None:
        terms["multires"] = masked_mse(parcels(student), parcels(teacher), rows)
    terms["aux"] = out.aux_loss
    return terms
