"""A trained model for a lab's own subjects and its own regions.

**A new subject** (:func:`adapt_subject`): everything stays frozen; the subject gets its own FiLM
scale and shift (2 x d_model numbers: 1,024 in v3, 256 in the demo config), starting from the average
subject, fitted to a few minutes of its fMRI. The frozen model's representation of those minutes is
computed once, so the fit itself takes seconds on a CPU.

    model, report = adapt_subject("runs/fmri/checkpoints/best.pt", study, "sub-09", minutes=5)
    save_adapted(model, "runs/sub-09.pt", report)

**A new output space** (:func:`new_space`): ROI time courses (``custom:N``, with their names) or
another parcellation. The fusion model of a checkpoint trained in another space is kept; a fresh
output projection (and FiLM rows for the study's subjects) is fitted with everything else frozen,
then optionally everything at a low learning rate. :func:`roi_study` turns a vertex study into such
an ROI study (ROI means of its runs, sharing its stimuli).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tinytribe.data.study import LoadedStudy
from tinytribe.formats import Study, StudyStimulus


@dataclass
class AdaptReport:
    """What fitting a new subject did: its (study, subject) key and FiLM row, the fMRI it used (TRs and
    minutes), the optimiser steps, the loss before and after, and the seconds it took."""

    key: tuple[str, str]
    row: int
    n_trs: int
    minutes: float
    steps: int
    loss_start: float
    loss_end: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.key[0]}/{self.key[1]}: FiLM row {self.row} fitted on {self.minutes:.1f} min ({self.n_trs} TRs) "
                f"in {self.steps} steps, {self.seconds:.1f} s; loss {self.loss_start:.3f} -> {self.loss_end:.3f}")


def _model(checkpoint, device: str):
    from tinytribe.model.checkpoint import load_checkpoint

    if isinstance(checkpoint, (str, Path)):
        model, _ = load_checkpoint(checkpoint, map_location=device)
        return model
    return checkpoint


def subject_windows(study: LoadedStudy, subject: str, *, split: str = "train", minutes: float | None = None,
                    n_trs: int = 50) -> tuple[list, int]:
    """Windows of ``subject``'s runs in ``split``, in run order, up to ``minutes`` of fMRI (None: all);
    returns them and the TRs they hold."""
    from tinytribe.data.windows import make_windows

    if subject not in study.subjects:
        raise ValueError(f"study {study.study.name} has no subject {subject!r} (subjects: {', '.join(study.subjects)})")
    sel = study.split(split)
    mine = [i for i in sel.runs if study.runs[i].subject == subject]
    if not mine:
        raise ValueError(f"subject {subject!r} has no runs in split {split!r} of {study.study.name}")
    budget = math.inf if minutes is None else minutes * 60.0
    out, used = [], 0
    for w in make_windows(study, sel.subset(mine), n_trs=n_trs):
        tr = study.runs[w.run].tr_s
        if used * tr >= budget - 1e-9:
            break
        n = min(w.n, int(round((budget - used * tr) / tr))) if math.isfinite(budget) else w.n
        if n < 2:
            break
        out.append(dataclasses.replace(w, n=n))
        used += n
    return out, used


def adapt_subject(checkpoint, study: LoadedStudy, subject: str, *, split: str = "train", minutes: float | None = None,
                  steps: int = 300, lr: float = 0.05, prior: float = 1.0, n_trs: int = 50, lead_in_s: float = 16.0,
                  device: str = "cpu", seed: int = 0) -> tuple[torch.nn.Module, AdaptReport]:
    """Fit a new subject's FiLM vectors with the rest of the model frozen.

    Args:
        checkpoint: a checkpoint path or a model (a copy is adapted; the original is not changed).
        study: the subject's study, in the model's output space (or one that reduces to it).
        subject: the subject (a key (study, subject) the model already has is refused: it is not new).
        split, minutes: the fMRI it learns from: the first ``minutes`` of its runs in ``split``.
        steps, lr: full-batch Adam steps and rate on the 2 x d_model numbers.
        prior: weight of the pull towards the average subject (mean squared deviation of gamma and beta
            from where they start): with a minute of data, 256 numbers would fit its noise (on the large
            demo, 1.0 keeps every fit at or above the average subject; 1e-3 fell below it at 1 minute).
        n_trs, lead_in_s: window length and feature lead-in.

    Returns:
        the adapted model (the subject's key in ``config.subject_keys``) and an :class:`AdaptReport`.
    """
    import copy

    from tinytribe.data.windows import collate, window_item
    from tinytribe.model.timegrid import TimeGrid, overlap_weights
    from tinytribe.train.phase3 import to_model_space

    t_start = time.perf_counter()
    model = copy.deepcopy(_model(checkpoint, device)).to(device).eval()
    key = (study.study.name, subject)
    keys = [tuple(k) for k in (model.config.subject_keys or [])]
    if key in keys:
        raise ValueError(f"{key[0]}/{key[1]} already has FiLM row {keys.index(key)} in this model: it is not a new "
                         f"subject")
    scored = to_model_space(study, model.config.space)
    windows, used = subject_windows(scored, subject, split=split, minutes=minutes, n_trs=n_trs)
    if not windows:
        raise ValueError(f"no fMRI of {subject!r} to adapt on (minutes={minutes})")
    for p in model.parameters():
        p.requires_grad_(False)
    n_before = model.head.film.n_subjects
    gamma, beta = model.add_subjects(1)
    old_keys = [list(k) for k in keys] if keys else [["", f"row-{i}"] for i in range(n_before)]   # rows without names
    model.config.subject_keys = old_keys + [list(key)]
    row = n_before
    # Everything before FiLM is frozen and FiLM is affine, so each fMRI sample's prediction is
    # proj(gamma * zbar + beta * s), with zbar the sample's overlap-weighted average of the frozen
    # MLP output and s its weights' sum: computed once, the fit is a small matrix product per step.
    cortex = torch.as_tensor(scored.cortex, device=device)
    zbar, sums, targets = [], [], []
    with torch.no_grad():
        for w in windows:
            b = collate([window_item(scored, w, lead_in_s=lead_in_s)])
            tokens, step_mask, _ = model.encode({m: x.to(device) for m, x in b["features"].items()},
                                                b["available"].to(device),
                                                masks={m: k.to(device) for m, k in b["masks"].items()})
            fused, _ = model.pool(tokens, step_mask)
            head = model.head
            z = torch.nn.functional.gelu(head.mlp(head.norm(model.hrf(fused))))[0]   # (T, D): what FiLM scales
            grid = b["grids"]["fmri"]
            wts = overlap_weights(b["t0"].to(device), z.shape[0], model.config.feature_rate_hz,
                                  TimeGrid(grid.times.to(device), grid.width_s))[0]   # (N, T)
            valid = b["fmri_valid"][0].to(device)
            zbar.append((wts @ z)[valid])
            sums.append(wts.sum(-1, keepdim=True)[valid])
            targets.append(b["fmri"][0].to(device).float()[valid][:, cortex])
    zbar, sums, targets = torch.cat(zbar), torch.cat(sums), torch.cat(targets)   # (R, D), (R, 1), (R, V_cortex)
    weight = model.head.proj.weight[cortex]                                        # (V_cortex, D)
    g0, b0 = gamma.detach().clone(), beta.detach().clone()
    torch.manual_seed(seed)
    opt = torch.optim.Adam([gamma, beta], lr=lr)

    def fit() -> torch.Tensor:
        pred = (gamma * zbar + beta * sums) @ weight.T   # (R, V_cortex)
        return (pred - targets).pow(2).mean()

    with torch.no_grad():
        start_loss = float(fit())
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        objective = fit() + prior * ((gamma - g0).pow(2).mean() + (beta - b0).pow(2).mean())
        objective.backward()
        opt.step()
    with torch.no_grad():
        end_loss = float(fit())
    tr = scored.runs[windows[0].run].tr_s
    report = AdaptReport(key=key, row=row, n_trs=used, minutes=used * tr / 60.0, steps=steps, loss_start=start_loss,
                         loss_end=end_loss, seconds=time.perf_counter() - t_start)
    return model, report


def save_adapted(model: torch.nn.Module, path: str | Path, report: AdaptReport) -> Path:
    """Write an adapted model as a checkpoint (phase ``adapt``; the report in its metrics)."""
    from tinytribe.model.checkpoint import save_checkpoint

    return save_checkpoint(model, path, phase="adapt", metrics={"adapt_n_trs": float(report.n_trs),
                                                                "adapt_loss_start": report.loss_start,
                                                                "adapt_loss_end": report.loss_end})


def roi_study(study_root: str | Path, out_root: str | Path, rois: dict[str, np.ndarray], *,
              name: str | None = None) -> Path:
    """Write a ``custom:N`` study whose runs are the ROI means of a vertex (or parcel) study's runs.

    Args:
        study_root: the source study folder.
        out_root: the new study folder; it shares the source's stimuli (features, teacher outputs,
            media: paths relative to the new folder), splits and BOLD times.
        rois: name -> (V,) bool, the outputs of the source space each ROI averages (ROIs may overlap:
            :func:`tinytribe.eval.rois.named_rois`); outputs on the source's medial wall are left out.
        name: the new study's name (default: the source's with ``-rois``).

    Raises:
        ValueError: a mask of the wrong length, or an ROI with no output outside the medial wall.
    """
    from tinytribe._io import atomic_write
    from tinytribe.data.study import load_study

    src_root, out_root = Path(study_root), Path(out_root)
    src = Study.load(src_root)
    medial = np.load(src_root / src.medial_wall) if src.medial_wall else np.zeros(src.n_outputs, bool)
    names = list(rois)
    members = []
    for roi, mask in rois.items():
        mask = np.asarray(mask, bool)
        if mask.shape != (src.n_outputs,):
            raise ValueError(f"ROI {roi!r}: mask of shape {mask.shape}, the study's space {src.space} has "
                             f"{src.n_outputs} outputs")
        if not (mask & ~medial).any():
            raise ValueError(f"ROI {roi!r} has no output outside the medial wall")
        members.append(np.flatnonzero(mask & ~medial))
    n = len(names)
    loaded = load_study(src_root, zscore=False, teacher=False)

    def rel(p: str | None) -> str | None:
        return None if p is None else os.path.relpath(src_root / p, out_root)

    runs = []
    for spec, run in zip(src.runs, loaded.runs):
        rois = np.stack([run.fmri[:, m].mean(1) for m in members], 1).astype(np.float32)   # (n_TR, N)
        path = out_root / "fmri" / run.subject / Path(spec.fmri).name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f, a=rois: np.save(f, a))
        runs.append(dataclasses.replace(spec, fmri=str(path.relative_to(out_root)), bold_times=rel(spec.bold_times)))
    stimuli = {sid: StudyStimulus(duration_s=s.duration_s, features=rel(s.features), teacher=[rel(t) for t in s.teacher],
                                  modalities=s.modalities, words=rel(s.words), media=rel(s.media))
               for sid, s in src.stimuli.items()}
    out = Study(name=name or f"{src.name}-rois", space=f"custom:{n}", subjects=list(src.subjects), stimuli=stimuli,
                runs=runs, splits=src.splits, medial_wall=None, output_names=list(names), provenance=src.provenance)
    out.save(out_root)
    return out_root


def new_space(checkpoint: str | Path, study: str | Path | LoadedStudy, run_dir: str | Path, *, head_epochs: int = 10,
              finetune_epochs: int = 0, finetune_lr_scale: float = 0.1, overrides: list[str] | None = None,
              progress: bool = False) -> dict:
    """Transfer a checkpoint's fusion model to a study in another output space.

    Stage 1 (``run_dir/head``): Phase 3 on the study with a fresh output projection and FiLM rows,
    only the head group training (``fmri.train=["head"]``) at the recipe's head rate x 10 (a fresh
    projection starts far from anything). Stage 2 (``run_dir/all``, when ``finetune_epochs`` > 0):
    everything, at ``finetune_lr_scale`` times the recipe's rates, from stage 1's best checkpoint.

    Returns:
        ``{"head": TrainResult, "all": TrainResult or None, "checkpoint": the final best or last path}``.
    """
    from tinytribe._io import atomic_write_json
    from tinytribe.data.study import load_study
    from tinytribe.formats import Checkpoint
    from tinytribe.train import phase3

    loaded = study if isinstance(study, LoadedStudy) else load_study(study)
    space = loaded.study.space
    run_dir = Path(run_dir)
    base = phase3.RECIPES["phase3"].recipe
    config = dict(Checkpoint.load(checkpoint).config, space=space, subject_keys=None, n_new_subjects=0)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_json = atomic_write_json(run_dir / f"model-{space.replace(':', '-')}.json", config)   # its sizes, the new space
    common = list(overrides or [])
    head = phase3.setup([loaded], run_dir / "head", model=model_json, overrides=[
        *common, f"loop.epochs={head_epochs}", 'fmri.train=["head"]',
        f"fmri.lr_head={base.lr_head * 10:g}"], init_from=checkpoint)
    result = {"head": head.train(progress=progress), "all": None, "notes": head.notes}
    final = result["head"].best or result["head"].last
    if finetune_epochs > 0:
        s = finetune_lr_scale
        every = phase3.setup([loaded], run_dir / "all", model=model_json, overrides=[
            *common, f"loop.epochs={finetune_epochs}",
            f"fmri.lr_head={base.lr_head * 10 * s:g}", f"fmri.lr_projectors={base.lr_projectors * s:g}",
            f"fmri.lr_transformer={base.lr_transformer * s:g}"], init_from=final)
        result["all"] = every.train(progress=progress)
        final = result["all"].best or result["all"].last
    result["checkpoint"] = final
    return result


def adaptation_curve(checkpoint, study: LoadedStudy, subject: str, minutes: list[float | None], *,
                     train_split: str = "train", eval_split: str = "val", steps: int = 300, device: str = "cpu",
                     **kwargs) -> list[dict]:
    """A new subject's held-out r (mean over cortex, on ``eval_split``) after fitting its FiLM vectors on
    each of ``minutes`` of its ``train_split`` fMRI (None: all of it), beside the average subject's r
    and the seconds each fit took. Rows: ``minutes``, ``n_trs``, ``r_adapted``, ``r_average``,
    ``mse_adapted``, ``mse_average`` (:func:`heldout_mse`), ``seconds``."""
    from tinytribe.eval import evaluate as E
    from tinytribe.train.phase3 import to_model_space

    base = _model(checkpoint, device)
    scored = to_model_space(study, base.config.space)
    sel = scored.split(eval_split)
    mine = sel.subset([i for i in sel.runs if scored.runs[i].subject == subject])
    if not len(mine):
        raise ValueError(f"subject {subject!r} has no runs in split {eval_split!r} to score")

    def scores(model) -> tuple[float, float]:
        preds = E.student_predictions(scored, mine, model, device=device)
        ev = E.score(scored, mine, {"m": preds})
        return ev.mean(ev.r["m"]), heldout_mse(scored, mine, preds)

    r_avg, mse_avg = scores(base)
    rows = []
    for m in minutes:
        model, rep = adapt_subject(base, study, subject, split=train_split, minutes=m, steps=steps, device=device,
                                   **kwargs)
        r, mse = scores(model)
        rows.append({"minutes": rep.minutes, "n_trs": rep.n_trs, "r_adapted": r, "r_average": r_avg,
                     "mse_adapted": mse, "mse_average": mse_avg, "seconds": rep.seconds})
    return rows


def heldout_mse(study: LoadedStudy, runs, predictions) -> float:
    """Mean squared error of predictions and (z-scored) fMRI over the selected samples and cortex: what
    FiLM's scale and shift change most (Pearson r ignores a vertex's gain and offset)."""
    errs = []
    for i in runs.runs:
        p, valid = predictions[i]
        k = runs.mask(i) & valid
        errs.append(((p[k][:, study.cortex] - study.runs[i].fmri[k][:, study.cortex]) ** 2).ravel())
    return float(np.concatenate(errs).mean())
