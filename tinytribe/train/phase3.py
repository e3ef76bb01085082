"""Phase 3: fine-tuning on fMRI with the cached teacher as regulariser (design, "Phase 3 -- fMRI").

    python -m tinytribe.train.phase3 --study runs/demo_study --run-dir runs/fmri --init runs/kd/checkpoints/best.pt
    python -m tinytribe.train.phase3 --study friends --study lebel --fmri.study_weights='{"lebel": 0.3}' ...
    python -m tinytribe.train.phase3 ... --recipe sprint-fmri --init runs/sprint/checkpoints/last.pt

Each fMRI window of the training split is one subject's run for ``n_trs`` TRs, with its FiLM row;
the teacher's outputs for the same stretch of stimulus (and its fusion activations) regularise the
shared model. One forward pass gives every target on its own grid (:mod:`tinytribe.train.losses.fmri`:
the terms, and how windows without a teacher are renormalised). The backbones stay frozen (their
features are cached).

Recipes (``RECIPES``):

- ``phase3``: 0.40 fMRI + 0.30 teacher + 0.10 feature + 0.10 temporal + 0.05 multi-resolution + 0.01
  aux (+ 0.20 for student pseudo-labels); modality dropout 0.3 (epochs 1-3), 0.1 (4-6), 0.0 (7-10);
  windows of 50 TRs, then 100 after epoch 3; lr 1e-5 projectors, 5e-5 fusion, 1e-4 output; OneCycle
  with 5 % warm-up; batch 4; 10 epochs.
- ``sprint-fmri`` (the 2-day sprint's Phase 3): 0.5 fMRI + 0.3 teacher + 0.2 temporal; 100-TR
  windows; 8 epochs; batch 4.

Studies are mixed with per-study sampling weights (``study_weights``, rates per window:
:class:`~tinytribe.data.windows.WindowSampler`); a batch holds windows of one study (TRs differ).
A study with fewer modalities (Lebel 2023's stories: audio and text; a transcript-only study) trains
with the others masked. Every study must be in the model's output space, or reduce to it (fsaverage4
runs into a Schaefer-1000 model); subjects are (study, subject) pairs, each with its FiLM row.

Stimuli whose teacher outputs come from a student checkpoint (``tinytribe.teacher.student``) are
pseudo-labels: their windows take the ``pseudo`` weight, no feature term, and only when the student's
recorded validation score reaches ``pseudo_min_score``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinytribe.config import ConfigError
from tinytribe.data.study import LoadedStudy
from tinytribe.data.windows import SubjectIndex, WindowSampler, make_stimulus_windows, make_windows
from tinytribe.formats import TeacherChunk
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.spaces import PARCELLATIONS, reduces
from tinytribe.train import runs
from tinytribe.train.losses.fmri import combine, fmri_terms, full_weight
from tinytribe.train.losses.kd import SpaceReduction
from tinytribe.train.phase2 import Windows
from tinytribe.train.pseudo import STUDENT_TEACHER
from tinytribe.train.runs import Preset, Run, start

TERMS = ("fmri", "teacher", "pseudo", "feature", "temporal", "multires", "aux")
GROUPS = ("head", "projectors", "transformer")


@dataclass
class FMRIConfig:
    """The Phase 3 recipe's settings (design defaults).

    Attributes:
        n_trs, n_trs_late, curriculum_epochs: windows of ``n_trs`` TRs for the first
            ``curriculum_epochs`` epochs, then of ``n_trs_late`` (0 epochs: ``n_trs_late`` throughout).
        lead_in_s: feature seconds before a window's first TR (what the HRF needs).
        train_split, val_split: the splits windows come from; the test split is never read.
        weights: loss weight per term (``TERMS``); a term of weight 0 is not computed.
        activation: the teacher activation of the feature term.
        multires_space: the parcels of the multi-resolution term.
        modality_dropout: ``[[first epoch, p], ...]`` (epochs from 0): p from that epoch on.
        lr_head: output MLP, FiLM, HRF, gated pooling and the KD head.
        lr_projectors: projectors, motion module, embeddings.
        lr_transformer: the fusion transformer.
        train: the groups that train (``head``, ``projectors``, ``transformer``); the others are frozen
            (a new output space: ``["head"]`` first).
        study_weights: sampling weight per study name (default 1: every window alike).
        corpus: which windows without fMRI train too: ``pseudo`` (stimuli with student pseudo-labels),
            ``all`` (any teacher outputs), ``none``.
        pseudo_labels: student teacher jobs' manifests (:mod:`tinytribe.train.pseudo`) whose chunks
            become the teacher outputs of their stimuli (stimuli without a real teacher's, unless
            ``pseudo_replace``).
        pseudo_replace: pseudo-labels replace a real teacher's outputs too (held-out experiments).
        pseudo_min_score: pseudo-labels count only from a student whose recorded validation score
            (its ``best.pt``'s ``score``: r against fMRI) is at least this.
        exclude_subjects: subjects left out of training (``sub-08`` or ``study/sub-08``): held out for
            :mod:`tinytribe.adapt`.
        router_warmup_steps, router_warmup_aux, router_warmup_temperature: the router warm-up, from
            random init only (as in Phase 2).
        teacher_spike: warn when the validation teacher MSE exceeds this times its lowest so far.
        init_from: the checkpoint the run started from ("" for random init).
        freeze_embeddings: None: frozen when ``init_from`` is a Phase 1 (``selfsup``) checkpoint.
    """

    n_trs: int = 50
    n_trs_late: int = 100
    curriculum_epochs: int = 3
    lead_in_s: float = 16.0
    train_split: str = "train"
    val_split: str = "val"
    weights: dict[str, float] = field(default_factory=lambda: {
        "fmri": 0.40, "teacher": 0.30, "feature": 0.10, "temporal": 0.10, "multires": 0.05, "aux": 0.01,
        "pseudo": 0.20})
    activation: str = "fusion_l4"
    multires_space: str = "schaefer-400"
    modality_dropout: list[list[float]] = field(default_factory=lambda: [[0, 0.3], [3, 0.1], [6, 0.0]])
    lr_head: float = 1e-4
    lr_projectors: float = 1e-5
    lr_transformer: float = 5e-5
    train: list[str] = field(default_factory=lambda: list(GROUPS))
    study_weights: dict[str, float] = field(default_factory=dict)
    corpus: str = "pseudo"
    pseudo_labels: list[str] = field(default_factory=list)
    pseudo_replace: bool = False
    pseudo_min_score: float = 0.20
    exclude_subjects: list[str] = field(default_factory=list)
    router_warmup_steps: int = 1000
    router_warmup_aux: tuple[float, float] = (0.1, 0.01)
    router_warmup_temperature: tuple[float, float] = (2.0, 1.0)
    teacher_spike: float = 1.5
    init_from: str = ""
    freeze_embeddings: bool | None = None

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"weights: unknown loss term {min(unknown)!r} (terms: {', '.join(TERMS)})")
        bad = set(self.train) - set(GROUPS)
        if bad or not self.train:
            raise ValueError(f"train: groups must be some of {', '.join(GROUPS)}, got {self.train}")
        if self.corpus not in ("pseudo", "all", "none"):
            raise ValueError(f"corpus must be 'pseudo', 'all' or 'none', got {self.corpus!r}")
        if not self.modality_dropout or any(len(e) != 2 or not 0 <= e[1] < 1 for e in self.modality_dropout):
            raise ValueError(f"modality_dropout must be [[first epoch, p < 1], ...], got {self.modality_dropout}")
        if min(self.n_trs, self.n_trs_late) < 2:
            raise ValueError(f"n_trs and n_trs_late must be >= 2, got {self.n_trs}, {self.n_trs_late}")

    def dropout_at(self, epoch: int) -> float:
        p = 0.0
        for first, q in sorted(self.modality_dropout):
            if epoch >= first:
                p = q
        return p


RECIPES = {
    "phase3": Preset(FMRIConfig(), loop={"batch_size": 4, "epochs": 10, "warmup_frac": 0.05}),
    "sprint-fmri": Preset(FMRIConfig(curriculum_epochs=0, weights={"fmri": 0.5, "teacher": 0.3, "temporal": 0.2,
                                                                    "aux": 0.01, "pseudo": 0.2}),
                          loop={"batch_size": 4, "epochs": 8, "warmup_frac": 0.05}),
}


def to_model_space(study: LoadedStudy, space: str) -> LoadedStudy:
    """The study with its runs in the model's ``space`` (reduced when coarser) and its teacher kept."""
    from tinytribe.data.study import in_space

    if study.study.space == space:
        return study
    if not reduces(study.study.space, space):
        raise ConfigError(f"study {study.study.name} is in {study.study.space}, the model predicts {space}, and "
                          f"{study.study.space} does not reduce to it: mix studies of one output space (or fit a "
                          f"head for {study.study.space}: tinytribe.adapt.new_space)")
    moved = in_space(study, space)
    return dataclasses.replace(moved, stimuli=study.stimuli)


def _excluded(keys: list[str], study: LoadedStudy, subject: str) -> bool:
    return subject in keys or f"{study.study.name}/{subject}" in keys


def pseudo_origin(study: LoadedStudy, stimulus: str) -> dict | None:
    """The student behind a stimulus's pseudo-labels (the ``student`` record of its first chunk's
    events), or None when its teacher is not a student."""
    tc = study.stimuli[stimulus].teacher
    if tc is None or tc.teacher.get("id") != STUDENT_TEACHER:
        return None
    meta = TeacherChunk.read_meta(study.root / study.study.stimuli[stimulus].teacher[0])
    return next((e for e in meta.get("events", []) if e.get("type") == "student"), {})


class FMRIWindows(Windows):
    """Phase 3's window items: teacher outputs mapped into the model's space (fsaverage4 onto a
    Schaefer-1000 model), or left out where they do not map (a ``custom:N`` model)."""

    def __init__(self, studies, windows, lead_in_s, subjects, space: str):
        super().__init__(studies, windows, lead_in_s, subjects)
        self.space = space

    def __getitem__(self, i: int) -> dict:
        from tinytribe.spaces import reduce_space

        item = super().__getitem__(i)
        if "teacher" in item:
            source = self.studies[self.windows[i][0]].stimuli[item["stimulus"]].teacher.space
            if not reduces(source, self.space):
                item = {k: v for k, v in item.items() if not k.startswith("teacher")}
            elif source != self.space:
                item["teacher"] = reduce_space(item["teacher"].astype(np.float32), source, self.space).astype(np.float16)
        return item


class FMRIRecipe:
    """Phase 3 on the fMRI runs of one or more studies, the teacher as regulariser.

    Args:
        studies: loaded studies, each in the model's space or one that reduces to it.
        model: the student; its FiLM rows must be ``self.subjects`` (``setup`` sizes it).
        config: the recipe's settings.
        name: the recipe's name (``phase3``, ``sprint-fmri``).
    """

    phase = "fmri"

    def __init__(self, studies: list[LoadedStudy], model: TinyTribe, config: FMRIConfig, name: str = "phase3"):
        c = config
        self.name, self.config = name, c
        space = model.config.space
        self.heads = nn.ModuleDict()
        self.notes: list[str] = [("backbones frozen: features come from the caches (backbone unfreezing is not "
                                  "part of this recipe)")]
        self.pseudo_ids: set[str] = set()
        self.studies = [self._screen_pseudo_labels(to_model_space(st, space)) for st in studies]
        known = {s for st in self.studies for s in st.subjects} | {f"{st.study.name}/{s}" for st in self.studies
                                                                  for s in st.subjects}
        typo = [k for k in c.exclude_subjects if k not in known]
        if typo:
            raise ConfigError(f"fmri.exclude_subjects: no subject {typo[0]!r} in "
                              f"{', '.join(st.study.name for st in self.studies)}")
        self.subjects = subject_index(self.studies, c.exclude_subjects)
        unknown = set(c.study_weights) - {st.study.name for st in self.studies}
        if unknown:
            raise ConfigError(f"study_weights: no study named {min(unknown)!r} "
                              f"(studies: {', '.join(st.study.name for st in self.studies)})")
        # windows: every curriculum length, fMRI runs and (pseudo-labelled) corpus stimuli
        self._windows: list[tuple[int, Any]] = []
        self._groups: dict[int, dict[str, list[int]]] = {}
        lengths = sorted({c.n_trs, c.n_trs_late} if c.curriculum_epochs > 0 else {c.n_trs_late})
        corpus = self._corpus_stimuli()
        for n_trs in lengths:
            groups: dict[str, list[int]] = {}
            for si, st in enumerate(self.studies):
                sel = st.split(c.train_split) if c.train_split in st.study.splits else None
                runs_kept = [i for i in (sel.runs if sel is not None else [])
                             if not _excluded(c.exclude_subjects, st, st.runs[i].subject)]
                for w in make_windows(st, sel.subset(runs_kept) if sel is not None else [], n_trs=n_trs,
                                      min_trs=min(n_trs, 10)):
                    key = f"{st.study.name}@{st.runs[w.run].tr_s:g}"
                    groups.setdefault(key, []).append(len(self._windows))
                    self._windows.append((si, w))
                tr = _study_tr(st, self.studies)
                parts = corpus.get(si, [])
                for w in (make_stimulus_windows(st, parts, length_s=n_trs * tr) if parts else []):
                    groups.setdefault(f"{st.study.name}@corpus", []).append(len(self._windows))
                    self._windows.append((si, w))
            self._groups[n_trs] = groups
        if not any(self._groups.values()):
            raise ValueError(f"no training windows in split {c.train_split!r} of "
                             f"{', '.join(st.study.name for st in self.studies)}")
        self.dataset = FMRIWindows(self.studies, self._windows, c.lead_in_s, self.subjects, space)
        self.teacher = self._teacher()
        for source in sorted({s.teacher.space for st in self.studies for s in st.stimuli.values() if s.teacher}):
            if not reduces(source, space):
                self.notes.append(f"teacher terms off for teacher outputs in {source}: they do not map onto the "
                                  f"model's {space}")
        self.parcels = None
        if c.weights.get("multires", 0) > 0:
            if space in PARCELLATIONS or space.startswith("custom:"):
                self.notes.append(f"multi-resolution term skipped: the output space {space} is already parcels")
            else:
                self.parcels = SpaceReduction.between(space, c.multires_space)
        self.computed = {"fmri", "temporal", "teacher", "pseudo", "feature"} | ({"multires"} if self.parcels else set())
        self.computed = {k for k in self.computed if c.weights.get(k, 0) > 0}
        self.full = full_weight(c.weights, self.computed)
        self.cortex = torch.as_tensor(np.logical_and.reduce([st.cortex for st in self.studies]))
        self.from_random_init = not c.init_from
        self.collapse_check_from = c.router_warmup_steps if self.from_random_init else 0
        self.window_steps = max(self._steps(i) for i in range(len(self._windows)))
        self._epoch_lengths: dict[int, int] = {}
        self._plan_args: tuple[int, int, int] | None = None
        self._teacher_mse_low = math.inf   # the validations' history (this session's)
        self._validations = 0
        self.val = [(st, [p for p in st.split_parts(c.val_split) if st.stimuli[_stimulus(p)].teacher is not None]
                     if c.val_split in st.study.splits else []) for st in self.studies]

    # -- data ---------------------------------------------------------------------------------------

    def _corpus_stimuli(self) -> dict[int, list]:
        """Per study, the training-split parts without fMRI runs that train on their teacher outputs."""
        c = self.config
        out: dict[int, list] = {}
        if c.corpus == "none":
            return out
        for si, st in enumerate(self.studies):
            if c.train_split not in st.study.splits:
                continue
            scanned = {r.stimulus for r in st.runs}
            for part in st.split_parts(c.train_split):
                sid = _stimulus(part)
                if sid in scanned or st.stimuli[sid].teacher is None:
                    continue
                if sid not in self.pseudo_ids and c.corpus == "pseudo":
                    continue
                out.setdefault(si, []).append(part)
        return out

    def _screen_pseudo_labels(self, study: LoadedStudy) -> LoadedStudy:
        """The study without pseudo-labels that may not train: those of a student whose recorded
        validation score is below ``pseudo_min_score``, and any outside the training split (validation
        compares with the real teacher only). Their stimuli keep no teacher outputs; the notes say so."""
        c = self.config
        train = ({_stimulus(p) for p in study.split_parts(c.train_split)} if c.train_split in study.study.splits
                 else set())
        stimuli = dict(study.stimuli)
        for sid in sorted(study.stimuli):
            origin = pseudo_origin(study, sid)
            if origin is None:
                continue
            score = float(origin.get("score", math.nan))
            why = (f"their student's validation score {score:.3f} is below pseudo_min_score {c.pseudo_min_score:g}"
                   if not score >= c.pseudo_min_score else
                   None if sid in train else f"{sid} is not in the training split {c.train_split!r}")
            if why:
                self.notes.append(f"pseudo-labels of {study.study.name}/{sid} left out: {why}")
                stimuli[sid] = dataclasses.replace(stimuli[sid], teacher=None)
            else:
                self.pseudo_ids.add(sid)
        return dataclasses.replace(study, stimuli=stimuli)

    def _steps(self, i: int) -> int:
        si, w = self._windows[i]
        st = self.studies[si]
        if hasattr(w, "run"):
            r = st.runs[w.run]
            span = r.bold_times_s[w.first + w.n - 1] + r.tr_s - r.bold_times_s[w.first]
            rate = st.stimuli[r.stimulus].features.rate_hz
        else:
            span, rate = w.end_s - w.start_s, st.stimuli[w.stimulus].features.rate_hz
        return math.ceil((span + self.config.lead_in_s) * rate) + 1

    def _teacher(self) -> dict | None:
        """The real teacher of the training windows whose outputs map onto the model's space
        (pseudo-labels record their student in their chunks)."""
        seen = {}
        for si, w in self._windows:
            st = self.studies[si]
            sid = st.runs[w.run].stimulus if hasattr(w, "run") else w.stimulus
            tc = st.stimuli[sid].teacher
            if tc is not None and tc.teacher.get("id") != STUDENT_TEACHER and reduces(tc.space, self.dataset.space):
                seen.setdefault((tc.teacher.get("id", ""), tc.teacher.get("revision", "")), f"{st.study.name}/{sid}")
        if len(seen) > 1:
            (a, wa), (b, wb) = list(seen.items())[:2]
            raise ValueError(f"teacher targets come from two teachers: {a[0]}@{a[1]} ({wa}) and {b[0]}@{b[1]} ({wb})")
        return {"id": next(iter(seen))[0], "revision": next(iter(seen))[1]} if seen else None

    def length_at(self, epoch: int) -> int:
        c = self.config
        return c.n_trs if c.curriculum_epochs > 0 and epoch < c.curriculum_epochs else c.n_trs_late

    def batches(self, epoch: int, batch_size: int, seed: int, world: int) -> list[list[int]]:
        """Epoch ``epoch``'s batches: the curriculum's window length, studies mixed by weight, a batch per
        study and TR."""
        self._plan_args = (batch_size, seed, world)
        groups = self._groups[self.length_at(epoch)]
        weights = {}
        for key in groups:   # a study's weight holds for each of its TR groups
            weights[key] = self.config.study_weights.get(key.rsplit("@", 1)[0], 1.0)
        sampler = WindowSampler(groups, weights, seed=seed)
        out = [[i for _, i in b] for b in sampler.epoch_batches(epoch, batch_size, min_batch=world)]
        self._epoch_lengths[epoch] = len(out)
        return out

    def epoch_of(self, step: int) -> int:
        epoch = 0
        while True:
            if epoch not in self._epoch_lengths and self._plan_args is not None:
                self.batches(epoch, *self._plan_args)
            n = self._epoch_lengths.get(epoch)
            if n is None or step < n:
                return epoch
            step -= n
            epoch += 1

    # -- training -----------------------------------------------------------------------------------

    def param_groups(self, model: TinyTribe) -> list[dict]:
        c = self.config
        head = [*model.head.parameters(), *model.hrf.parameters(), *model.pool.parameters(), *model.kd_head.parameters()]
        proj = [*model.projectors.parameters(), *model.motion.parameters()]
        frozen_emb = bool(c.freeze_embeddings) or "projectors" not in c.train
        if not frozen_emb:
            proj += list(model.embeddings.parameters())
        for p in model.embeddings.parameters():
            p.requires_grad_(not frozen_emb)
        groups = {"head": (head, c.lr_head), "projectors": (proj, c.lr_projectors),
                  "transformer": (list(model.fusion.parameters()), c.lr_transformer)}
        out = []
        for name, (params, lr) in groups.items():
            for p in params:
                p.requires_grad_(name in c.train)
            if name in c.train:
                out.append({"name": name, "params": params, "lr": lr})
        return out

    def router_schedule(self, step: int) -> tuple[float, float]:
        """(aux weight, router temperature) at ``step`` (:func:`tinytribe.train.runs.router_schedule`)."""
        return runs.router_schedule(self.config, self.from_random_init, step)

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        aux_weight, temperature = self.router_schedule(step)
        p_drop = c.dropout_at(self.epoch_of(step))
        has_teacher = "teacher" in batch
        want_feature = has_teacher and "feature" in self.computed and c.activation in batch.get("kd_grids", {})
        out = model(batch["features"], batch["available"], batch["t0"], batch["grids"], subject=batch["subject"],
                    masks=batch["masks"], p_modality_dropout=p_drop, router_temperature=temperature,
                    kd_grids={c.activation: batch["kd_grids"][c.activation]} if want_feature else None,
                    average_grids=("teacher",) if has_teacher else ())
        device = out.aux_loss.device
        pseudo = torch.tensor([i == STUDENT_TEACHER for i in batch.get("teacher_ids", [None] * len(batch["t0"]))],
                              device=device)
        terms = fmri_terms(out, batch, cortex=self.cortex.to(device), pseudo=pseudo,
                           activation=c.activation if want_feature else None,
                           parcels=self.parcels.to(device) if self.parcels is not None else None)
        terms = {k: v for k, v in terms.items() if k == "aux" or k in self.computed}
        has_fmri = batch["fmri_valid"].any(1).to(device) if "fmri_valid" in batch else torch.zeros_like(pseudo)
        total, values = combine(terms, dict(c.weights, aux=aux_weight), has_fmri, self.full)
        labelled = batch["has_teacher"].to(device) if has_teacher else torch.zeros_like(pseudo)
        logs = {**{k: v.detach() for k, v in values.items()}, "teacher_share": float((labelled & ~pseudo).float().mean()),
                "pseudo_share": float((labelled & pseudo).float().mean()), "modality_dropout": p_drop,
                "aux_weight": aux_weight, "router_temperature": temperature,
                "expert_share": out.aux["expert_share"].float().cpu().numpy()}
        return total, logs

    # -- validation ---------------------------------------------------------------------------------

    def validate(self, model: TinyTribe, device: str) -> dict[str, Any]:
        """r against fMRI on the val split, per subject and overall (``score``); the teacher-consistency
        MSE (average subject vs teacher on val stimuli with teacher outputs); FiLM gamma spread."""
        from tinytribe.eval import evaluate as E

        c = self.config
        out: dict[str, Any] = {}
        per_subject: dict[str, list[float]] = {}
        r_all, mse, rows, shares = [], [], [], []
        for st, teacher_parts in self.val:
            sel = st.split(c.val_split) if c.val_split in st.study.splits else None
            if sel is not None:   # the held-out subjects are not scored: they must not choose the checkpoint
                sel = sel.subset([i for i in sel.runs if not _excluded(c.exclude_subjects, st, st.runs[i].subject)])
            if sel is not None and len(sel):
                ev = E.score(st, sel, {"student": E.student_predictions(st, sel, model, device=device,
                                                                        n_trs=c.n_trs_late)})
                r_all.append(ev.mean(ev.r["student"]))
                for k, s in enumerate(ev.subjects):
                    per_subject.setdefault(f"r_{st.study.name}/{s}" if len(self.studies) > 1 else f"r_{s}",
                                           []).append(ev.mean(ev.r["student"][k]))
            if teacher_parts and reduces(st.stimuli[_stimulus(teacher_parts[0])].teacher.space, model.config.space):
                windows = make_stimulus_windows(st, teacher_parts, length_s=c.n_trs_late * _study_tr(st, self.studies))
                a = E.teacher_agreement(st, windows, model, device=device, activation=None, lead_in_s=c.lead_in_s)
                mse.append(a.mse * a.n_rows)
                rows.append(a.n_rows)
                shares.append(a.expert_share * a.n_rows)
        if r_all:
            out["r_fmri"] = float(np.mean(r_all))
            out |= {k: float(np.mean(v)) for k, v in per_subject.items()}
        if rows:
            out["teacher_mse"] = float(np.sum(mse) / sum(rows))
            out["expert_share"] = np.sum(shares, axis=0) / sum(rows)
            low = self._teacher_mse_low
            if math.isfinite(low) and out["teacher_mse"] > c.teacher_spike * low:
                warnings.warn(f"{self.name}: the teacher-consistency MSE rose to {out['teacher_mse']:.3f} from "
                              f"{low:.3f}: the model may be fitting fMRI noise -- increase the teacher weight "
                              f"(--fmri.weights.teacher=...)", stacklevel=2)
            self._teacher_mse_low = min(low, out["teacher_mse"])
        out |= film_spread(model, self.subjects.keys, with_study=len(self.studies) > 1)
        self._validations += 1
        if out["film_gamma_dev_max"] < 1e-3 and "head" in c.train and self._validations == 3:   # once, after a while
            warnings.warn(f"{self.name}: every subject's FiLM gamma is still ~1 (largest deviation "
                          f"{out['film_gamma_dev_max']:.1e}): FiLM is not learning subject differences "
                          f"(raise lr_head, or train longer)", stacklevel=2)
        out["score"] = out.get("r_fmri", -out.get("teacher_mse", math.nan))
        return out


def film_spread(model: TinyTribe, keys: list[tuple[str, str]], *, with_study: bool = False) -> dict[str, float]:
    """Per subject, the RMS deviation of its FiLM gamma from 1 (``film_gamma_dev_<subject>``, or
    ``..._<study>/<subject>`` with several studies), their largest (``film_gamma_dev_max``), and the
    spread of gamma across subjects (``film_gamma_spread``)."""
    g = model.head.film.gamma.detach().float().cpu()
    dev = (g - 1).pow(2).mean(1).sqrt()
    out = {f"film_gamma_dev_{f'{k[0]}/{k[1]}' if with_study else k[1]}": float(v) for k, v in zip(keys, dev)}
    out["film_gamma_dev_max"] = float(dev.max()) if dev.numel() else 0.0
    out["film_gamma_spread"] = float(g.std(0).mean()) if g.shape[0] > 1 else 0.0
    return out


def _width(tc, name: str) -> int:
    """Values per row of a teacher activation (read from its first row: lazy caches hold no arrays)."""
    first = np.zeros(tc.activation_times_s[name].size, bool)
    first[:1] = True
    return int(tc.take_activation(name, first).shape[1])


def _stimulus(part) -> str:
    return part if isinstance(part, str) else part.stimulus


def _study_tr(study: LoadedStudy, studies: list[LoadedStudy]) -> float:
    """A study's TR (the median of its runs'), else that of all studies' runs (corpus windows are as long
    in seconds as fMRI windows), else 1.49 s (the design's)."""
    trs = [r.tr_s for r in study.runs] or [r.tr_s for st in studies for r in st.runs]
    return float(np.median(trs)) if trs else 1.49


def with_pseudo_labels(study: LoadedStudy, config: FMRIConfig) -> LoadedStudy:
    """``study`` with the pseudo-labels of ``config.pseudo_labels`` whose stimuli it holds, on its training
    split's stimuli only (validation compares with the real teacher)."""
    from tinytribe.train.pseudo import pseudo_stimuli, use_pseudo_labels

    train = ({_stimulus(p) for p in study.split_parts(config.train_split)} if config.train_split in study.study.splits
             else set())
    for path in config.pseudo_labels:
        if pseudo_stimuli(path) and pseudo_stimuli(path) <= set(study.stimuli):
            study = use_pseudo_labels(study, path, replace=config.pseudo_replace, only=train)
    return study


def _check_pseudo_manifests(studies: list[LoadedStudy], paths: list[str]) -> None:
    from tinytribe.train.pseudo import pseudo_stimuli

    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"fmri.pseudo_labels: {path}: no such manifest")
        ids = pseudo_stimuli(path)
        if not any(ids and ids <= set(st.stimuli) for st in studies):
            raise ConfigError(f"fmri.pseudo_labels: {path}: its stimuli are not all in one study "
                              f"({', '.join(st.study.name for st in studies)})")


def subject_index(studies: list[LoadedStudy], exclude: list[str]) -> SubjectIndex:
    """The FiLM rows: every (study, subject) of the studies, less the excluded."""
    index = SubjectIndex(studies)
    index.keys = [k for k in index.keys if k[1] not in exclude and f"{k[0]}/{k[1]}" not in exclude]
    index._row = {k: i for i, k in enumerate(index.keys)}
    return index


def setup(studies: list, run_dir: str | Path, *, recipe: str = "phase3", model: str | Path | None = None,
          overrides: list[str] | None = None, init_from: str | Path | None = None, resume: str | Path | None = "auto",
          lazy: bool = False) -> Run:
    """Everything a Phase 3 run needs, fresh or resumed (arguments as :func:`tinytribe.train.phase2.setup`;
    overrides ``model.<key>=...``, ``loop.<key>=...``, ``fmri.<key>=...``). The model's FiLM rows are
    sized to the studies' subjects (``config.subject_keys``); starting from a Phase 2 checkpoint keeps
    everything else."""
    from tinytribe.config import apply_overrides
    from tinytribe.data.study import load_study

    if recipe not in RECIPES:
        raise ConfigError(f"unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    run_dir = Path(run_dir)
    loaded = [st if isinstance(st, LoadedStudy) else load_study(st, lazy=lazy) for st in studies]
    asked = apply_overrides(RECIPES[recipe].recipe, runs.split_overrides(overrides or [], "fmri")["fmri"])
    index = subject_index(loaded, asked.exclude_subjects)

    def prepare(net: TinyTribe) -> None:   # FiLM rows for these subjects, before a checkpoint's weights load
        net.head.film = type(net.head.film)(net.config.d_model, len(index))
        net.config.n_subjects, net.config.n_new_subjects = len(index), 0
        net.config.subject_keys = [list(k) for k in index.keys]

    s = start(run_dir, recipe, RECIPES, "fmri", model=model, overrides=overrides or [], init_from=init_from,
              resume=resume, prepare=prepare)
    net, cfg, loop, notes = s.model, s.config, s.loop, s.notes
    _check_pseudo_manifests(loaded, cfg.pseudo_labels)
    loaded = [with_pseudo_labels(st, cfg) for st in loaded]
    rec = FMRIRecipe(loaded, net, cfg, name=recipe)
    if [tuple(k) for k in (net.config.subject_keys or [])] != rec.subjects.keys:
        raise ConfigError(f"the model's subjects {net.config.subject_keys} are not the studies' "
                          f"{[list(k) for k in rec.subjects.keys]}: resume with the same studies")
    widths = {_width(tc, cfg.activation) for st in rec.studies for tc in (x.teacher for x in st.stimuli.values())
              if tc is not None and cfg.activation in tc.activations}
    if "feature" in rec.computed and widths - {net.config.teacher_dim}:
        raise ConfigError(f"teacher activation {cfg.activation!r} has {min(widths - {net.config.teacher_dim})} values "
                          f"per row, the model's KD head {net.config.teacher_dim} (model.teacher_dim)")
    net.config.trained_steps = max(net.config.trained_steps, rec.window_steps)
    notes += rec.notes
    n_fmri = sum(1 for _, w in rec._windows if hasattr(w, "run"))
    notes.append(f"{recipe}: {len(index)} subjects of {', '.join(st.study.name for st in loaded)}; {n_fmri} fMRI "
                 f"windows (all curriculum lengths) and {len(rec._windows) - n_fmri} corpus windows"
                 + (f" ({len(rec.pseudo_ids)} pseudo-labelled stimuli)" if rec.pseudo_ids else "")
                 + (f"; teacher {rec.teacher['id']}@{rec.teacher['revision']}" if rec.teacher else "; no teacher"))
    return Run(net, rec, loop, run_dir, s.resume, notes)


def main(argv: list[str] | None = None) -> int:
    """``python -m tinytribe.train.phase3``: fine-tune on studies' fMRI with the teacher as regulariser."""
    return runs.main(argv, "phase3", __doc__, "fmri", RECIPES, "phase3", setup)


if __name__ == "__main__":
    sys.exit(main())
