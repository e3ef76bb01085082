"""Phase 3 terms (design, "Phase 3 -- fMRI"): each target on its own time grid, from one forward pass,
weighted window by window.

Terms, per window:

- ``fmri``: MSE of the subject's prediction (its FiLM row) and its fMRI, on the run's TR grid;
- ``temporal``: SmoothL1 of successive differences of the same (its dynamics);
- ``multires``: MSE of the same in coarse parcels (Schaefer-400 means);
- ``teacher``: MSE of the *average subject's* prediction and the cached teacher's, on the teacher's
  grid -- the teacher predicts no one in particular, so it regularises the shared model and leaves
  the subjects' differences to their fMRI;
- ``feature``: 1 - cosine of the KD head and the teacher's fusion activation;
- ``pseudo``: as ``teacher``, for windows whose targets come from a student checkpoint run as a
  teacher (pseudo-labels, design 5c): they have no activations, so no ``feature`` term;
- ``aux``: the MoE's auxiliary loss (the whole batch).

A window holds the terms its data allow: a window without a teacher drops ``teacher`` and ``feature``.
The weights of an fMRI window's terms are renormalised to sum to what a window with every term
(``fmri``, ``teacher``, ``feature``, ``temporal``, ``multires``) sums to, so fMRI windows weigh alike
with or without a teacher. A corpus window (no fMRI: pseudo-labelled video) keeps its terms' own
weights -- pseudo-labels count less than fMRI and less than the real teacher, as the design asks.
The total is the mean over windows plus the weighted aux term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FMRI_TERMS = ("fmri", "temporal", "multires")
TEACHER_TERMS = ("teacher", "feature")
FULL_WINDOW = (*FMRI_TERMS, *TEACHER_TERMS)   # the terms an fMRI window with a real teacher has


def window_mse(pred: torch.Tensor, target: torch.Tensor, rows: torch.Tensor, outputs: torch.Tensor | None = None
               ) -> torch.Tensor:
    """(B,) mean squared error of each window over its valid rows (B, N) and chosen outputs (V,)."""
    if outputs is not None:
        pred, target = pred[..., outputs], target[..., outputs]
    err = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    return (err * rows).sum(1) / rows.sum(1).clamp(min=1)


def window_temporal(pred: torch.Tensor, target: torch.Tensor, rows: torch.Tensor,
                    outputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) SmoothL1 of successive differences over each window's pairs of valid rows, and (B,) whether
    the window has such a pair."""
    if outputs is not None:
        pred, target = pred[..., outputs], target[..., outputs]
    pairs = rows[:, 1:] & rows[:, :-1]  # (B, N-1)
    err = F.smooth_l1_loss(pred.float().diff(dim=1), target.float().diff(dim=1), reduction="none").mean(dim=-1)
    return (err * pairs).sum(1) / pairs.sum(1).clamp(min=1), pairs.any(1)


def window_feature(student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - cosine of KD features and teacher activations (B, M, D) over each window's valid rows."""
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-6)  # (B, M)
    return ((1.0 - cos) * rows).sum(1) / rows.sum(1).clamp(min=1)


def fmri_terms(out, batch: dict, *, cortex: torch.Tensor, pseudo: torch.Tensor, activation: str | None = None,
               teacher_map=None, parcels=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The unweighted Phase 3 terms of one forward pass, per window.

    Args:
        out: the model's output, run with the batch's ``fmri`` grid (the subjects' FiLM rows) and,
            when the batch has a teacher, its ``teacher`` grid among ``average_grids``.
        batch: a :func:`~tinytribe.data.windows.collate` batch on the model's device.
        cortex: (V,) bool outputs of the model's space that count.
        pseudo: (B,) bool, the windows whose teacher outputs are a student's pseudo-labels.
        activation: the teacher activation of the ``feature`` term (None: no such term).
        teacher_map: teacher space -> model space, when they differ.
        parcels: model space -> coarse parcels for ``multires`` (None: no such term).

    Returns:
        ``{term: ((B,) value per window, (B,) bool whether the window has the term)}``, and ``aux`` (its
        batch value, every window).
    """
    B = batch["t0"].shape[0]
    device = out.aux_loss.device
    terms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if "fmri" in batch:
        pred, target = out.responses["fmri"], batch["fmri"].to(device)
        rows = batch["fmri_valid"].to(device)
        has = rows.any(1)
        terms["fmri"] = (window_mse(pred, target, rows, cortex), has)
        value, pairs = window_temporal(pred, target, rows, cortex)
        terms["temporal"] = (value, pairs)
        if parcels is not None:
            terms["multires"] = (window_mse(parcels(pred), parcels(target), rows), has)
    if "teacher" in batch:
        pred, target = out.responses["teacher"], batch["teacher"].to(device)
        if teacher_map is not None:
            target = teacher_map(target.float())
        rows = batch["teacher_valid"].to(device)
        mse, has = window_mse(pred, target, rows, cortex), rows.any(1)
        pseudo = pseudo.to(device)
        terms["teacher"] = (mse, has & ~pseudo)
        terms["pseudo"] = (mse, has & pseudo)
        if activation is not None and activation in batch.get("teacher_acts", {}):
            rows_a = batch["teacher_acts_valid"][activation].to(device)
            terms["feature"] = (window_feature(out.kd[activation], batch["teacher_acts"][activation].to(device),
                                               rows_a), rows_a.any(1) & ~pseudo)
    terms["aux"] = (out.aux_loss.expand(B), torch.ones(B, dtype=torch.bool, device=device))
    return terms


def full_weight(weights: dict[str, float], computed: set[str]) -> float:
    """The sum of the weights of an fMRI window with a real teacher, over the terms a run computes."""
    return sum(weights.get(k, 0.0) for k in FULL_WINDOW if k in computed)


def combine(terms: dict[str, tuple[torch.Tensor, torch.Tensor]], weights: dict[str, float], has_fmri: torch.Tensor,
            full: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total, renormalised window by window (module docstring), and each term's mean over
    the windows that have it (terms no window has are left out).

    Args:
        terms: :func:`fmri_terms`.
        weights: weight per term (a term missing or 0 counts for nothing).
        has_fmri: (B,) bool, the fMRI windows (renormalised); the others keep their weights.
        full: what the weights of a window with every term of the run sum to (``full_weight``).
    """
    names = [k for k in terms if k != "aux" and weights.get(k, 0) > 0]
    values = torch.stack([terms[k][0] for k in names], 1) if names else None          # (B, K)
    present = torch.stack([terms[k][1] for k in names], 1).float() if names else None  # (B, K)
    has_fmri = has_fmri.to(terms["aux"][0].device)
    total = weights.get("aux", 0.0) * terms["aux"][0][0]
    if names:
        w = torch.tensor([weights[k] for k in names], device=values.device) * present  # (B, K)
        scale = torch.where(has_fmri, full / w.sum(1).clamp(min=1e-12), torch.ones_like(has_fmri, dtype=w.dtype))
        total = total + ((w * scale[:, None] * values).sum(1)).mean()
    logs = {}
    for k, (v, has) in terms.items():
        if has.any():
            logs[k] = (v * has).sum() / has.sum()
    return total, logs
