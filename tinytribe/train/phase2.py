"""Phase 2: distillation from the cached teacher (design, "Phase 2 -- KD"), and the design's 2-day sprint.

    python -m tinytribe.train.phase2 --study runs/demo_study --run-dir runs/kd
    python -m tinytribe.train.phase2 --study runs/demo_study --run-dir runs/sprint --recipe sprint
    torchrun --nproc_per_node=2 -m tinytribe.train.phase2 --study ... --run-dir ...    # several GPUs

The student learns the teacher's predictions on the teacher's own 1 Hz BOLD grid (which the model
produces directly), its fusion activations (the KD head, on the activations' times), its dynamics and
its coarse maps. Windows come from the training split only: val and test stimuli (or time ranges)
are held out even when they have teacher outputs. Backbones are frozen (their features are cached);
the temporal and modality embeddings train from random init and stay frozen after a Phase 1
checkpoint. The MoE router warms up from random init: over the first 1,000 steps the auxiliary
weight falls from 0.1 to 0.01 and the router temperature from 2.0 to 1.0.

Recipes (``RECIPES``):

- ``phase2``: 0.60 MSE + 0.20 feature (1 - cos vs ``fusion_l4``) + 0.10 temporal + 0.05 multi-resolution
  (Schaefer-400 parcel means) + 0.01 MoE aux; AdamW, lr 1e-3 head and gates, 1e-4 projectors and
  transformer; OneCycle with 10 % warm-up; clip 1.0; modality dropout 0.3; batch 8 of 150 s; 10 epochs.
- ``sprint`` (the design's "2-Day Sprint"): Schaefer-1000 output, 0.7 MSE + 0.2 temporal + 0.1 feature
  + aux; windows of 50 TRs (74.5 s at the design's 1.49 s TR); modality dropout 0.2; lr 3e-4 (head
  1e-3); 20 epochs; a checkpoint every 5 epochs. An fsaverage4 or fsaverage5 teacher is averaged into
  Schaefer-1000 parcels on the fly.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinytribe.config import ConfigError
from tinytribe.data.study import LoadedStudy
from tinytribe.data.windows import StimulusWindow, SubjectIndex, Window, make_stimulus_windows, window_item
from tinytribe.model.config import ModelConfig
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.spaces import PARCELLATIONS
from tinytribe.train import runs
from tinytribe.train.losses.kd import SpaceReduction, kd_terms
from tinytribe.train.runs import Preset, Run, start


@dataclass
class KDConfig:
    """The Phase 2 recipe's settings (design defaults).

    Attributes:
        window_s, stride_s: training window length and step in seconds (stride None: no overlap).
        lead_in_s: feature seconds before a window's first target (what the HRF needs).
        train_split, val_split: the splits windows come from; the test split is never read.
        weights: loss weight per term (``kd``, ``feature``, ``temporal``, ``multires``, ``aux``); a term
            of weight 0 is not computed.
        activation: the teacher activation the KD head learns (``fusion_l4``).
        multires_space: the parcels of the multi-resolution term.
        modality_dropout: probability of dropping each available modality of a window.
        lr_head: head, FiLM, HRF, gated pooling (the modality gates) and the KD head.
        lr_projectors: projectors, motion module, embeddings.
        lr_transformer: the fusion transformer (routers and experts).
        router_warmup_steps: steps of the router warm-up (from random init only; 0: none).
        router_warmup_aux, router_warmup_temperature: (start, end) of the aux weight and temperature.
        init_from: the checkpoint the run started from ("" for random init).
        freeze_embeddings: None: frozen when ``init_from`` is a Phase 1 (``selfsup``) checkpoint.
    """

    window_s: float = 150.0
    stride_s: float | None = None
    lead_in_s: float = 16.0
    train_split: str = "train"
    val_split: str = "val"
    weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.60, "feature": 0.20, "temporal": 0.10,
                                                               "multires": 0.05, "aux": 0.01})
    activation: str = "fusion_l4"
    multires_space: str = "schaefer-400"
    modality_dropout: float = 0.3
    lr_head: float = 1e-3
    lr_projectors: float = 1e-4
    lr_transformer: float = 1e-4
    router_warmup_steps: int = 1000
    router_warmup_aux: tuple[float, float] = (0.1, 0.01)
    router_warmup_temperature: tuple[float, float] = (2.0, 1.0)
    init_from: str = ""
    freeze_embeddings: bool | None = None

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"weights: unknown loss term {sorted(unknown)[0]!r} (terms: {', '.join(TERMS)})")


TERMS = ("kd", "feature", "temporal", "multires", "aux")


RECIPES = {
    "phase2": Preset(KDConfig()),
    "sprint": Preset(KDConfig(window_s=50 * 1.49, weights={"kd": 0.7, "temporal": 0.2, "feature": 0.1, "aux": 0.01},
                              modality_dropout=0.2, lr_head=1e-3, lr_projectors=3e-4, lr_transformer=3e-4),
                     loop={"epochs": 20, "checkpoint_every": 0, "checkpoint_every_epochs": 5},
                     model={"space": "schaefer-1000"}),
}


class Windows(torch.utils.data.Dataset):
    """Window items of several studies, by index (picklable for DataLoader workers); ``subjects`` gives
    fMRI windows their FiLM rows (:class:`~tinytribe.data.windows.SubjectIndex`)."""

    def __init__(self, studies: list[LoadedStudy], windows: list[tuple[int, StimulusWindow | Window]],
                 lead_in_s: float, subjects: SubjectIndex | None = None):
        self.studies, self.windows, self.lead_in_s, self.subjects = studies, windows, lead_in_s, subjects

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        si, w = self.windows[i]
        return window_item(self.studies[si], w, lead_in_s=self.lead_in_s, subjects=self.subjects)


class KDRecipe:
    """Phase 2 on the teacher outputs of one or more studies (corpora without fMRI included).

    Args:
        studies: loaded studies; every training-split stimulus must have teacher outputs, all from one
            teacher and one space.
        model_config: the student's config (its output space, teacher width).
        config: the recipe's settings.
        name: the recipe's name (``phase2``, ``sprint``).
    """

    phase = "kd"

    def __init__(self, studies: list[LoadedStudy], model_config: ModelConfig, config: KDConfig, name: str = "phase2"):
        self.name, self.config, self.studies = name, config, studies
        self.heads = nn.ModuleDict()
        windows = []
        for si, st in enumerate(studies):
            windows += [(si, w) for w in make_stimulus_windows(st, config.train_split, length_s=config.window_s,
                                                               stride_s=config.stride_s)]
        if not windows:
            raise ValueError(f"no training windows in split {config.train_split!r} of "
                             f"{', '.join(st.study.name for st in studies)}")
        self.dataset = Windows(studies, windows, config.lead_in_s)
        self.teacher = one_teacher(studies, [w for _, w in windows])
        spaces = {st.study.space for st in studies}
        if len(spaces) > 1:
            raise ValueError(f"the studies' teachers are in different spaces ({', '.join(sorted(spaces))}): "
                             f"distil from one space")
        source, target = spaces.pop(), model_config.space
        try:
            self.teacher_map = None if source == target else SpaceReduction.between(source, target)
        except ValueError as e:
            raise ValueError(f"the teacher is in {source}, the student predicts {target}: {e}") from None
        cortex = np.logical_and.reduce([st.cortex for st in studies])
        kind = self.teacher_map.kind if self.teacher_map is not None else "same"
        self.cortex = torch.as_tensor(cortex if kind == "same" else cortex[self.teacher_map.index.numpy()] if
                                      kind == "select" else np.ones(model_config.n_outputs, bool))
        self.notes: list[str] = []
        self.parcels = None
        if config.weights.get("multires", 0) > 0:
            if target in PARCELLATIONS or target.startswith("custom:"):
                self.notes.append(f"multi-resolution term skipped: the output space {target} is already parcels")
            else:
                self.parcels = SpaceReduction.between(target, config.multires_space)
        self.val = []   # per study, windows of the val parts with teacher outputs (fMRI-only parts: scored on fMRI)
        for st in studies:
            if config.val_split in st.study.splits:
                parts = [p for p in st.split_parts(config.val_split)
                         if st.stimuli[p if isinstance(p, str) else p.stimulus].teacher is not None]
                self.val.append((st, make_stimulus_windows(st, parts, length_s=config.window_s) if parts else []))
        self.from_random_init = not config.init_from
        self.collapse_check_from = config.router_warmup_steps if self.from_random_init else 0
        self.window_steps = max(math.ceil((w.end_s - w.start_s + config.lead_in_s) * studies[si].stimuli[w.stimulus]
                                          .features.rate_hz) + 1 for si, w in windows)   # the longest window's steps

    def param_groups(self, model: TinyTribe) -> list[dict]:
        c = self.config
        head = [*model.head.parameters(), *model.hrf.parameters(), *model.pool.parameters(), *model.kd_head.parameters()]
        proj = [*model.projectors.parameters(), *model.motion.parameters()]
        if not self.freeze_embeddings:
            proj += list(model.embeddings.parameters())
        for p in model.embeddings.parameters():
            p.requires_grad_(not self.freeze_embeddings)
        return [{"name": "head", "params": [p for p in head if p.requires_grad], "lr": c.lr_head},
                {"name": "projectors", "params": [p for p in proj if p.requires_grad], "lr": c.lr_projectors},
                {"name": "transformer", "params": [p for p in model.fusion.parameters() if p.requires_grad],
                 "lr": c.lr_transformer}]

    @property
    def freeze_embeddings(self) -> bool:
        return bool(self.config.freeze_embeddings)

    def router_schedule(self, step: int) -> tuple[float, float]:
        """(aux weight, router temperature) at ``step`` (:func:`tinytribe.train.runs.router_schedule`)."""
        return runs.router_schedule(self.config, self.from_random_init, step)

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        aux_weight, temperature = self.router_schedule(step)
        kd_grids = {c.activation: batch["kd_grids"][c.activation]} if c.weights.get("feature", 0) > 0 else None
        out = model(batch["features"], batch["available"], batch["t0"], {"teacher": batch["grids"]["teacher"]},
                    subject=batch["subject"], masks=batch["masks"], p_modality_dropout=c.modality_dropout,
                    router_temperature=temperature, kd_grids=kd_grids)
        device = out.aux_loss.device
        terms = kd_terms(out, batch, cortex=self.cortex.to(device), activation=c.activation if kd_grids else None,
                         teacher_map=self.teacher_map.to(device) if self.teacher_map is not None else None,
                         parcels=self.parcels.to(device) if self.parcels is not None else None)
        weights = dict(c.weights, aux=aux_weight)
        total = sum(weights.get(k, 0.0) * v for k, v in terms.items())
        logs = {**{k: v.detach() for k, v in terms.items()}, "aux_weight": aux_weight,
                "router_temperature": temperature, "expert_share": out.aux["expert_share"].float().cpu().numpy()}
        return total, logs

    def validate(self, model: TinyTribe, device: str) -> dict[str, Any]:
        """r against the teacher on the val split's stimulus windows, the feature cosine and the routing;
        r against fMRI where the val split has runs. ``score``: r vs fMRI when there is some, else vs
        the teacher."""
        from tinytribe.eval import evaluate as E

        out: dict[str, Any] = {}
        r_t, cos, shares, rows = [], [], [], []
        for st, windows in self.val:
            if windows:
                a = E.teacher_agreement(st, windows, model, device=device, activation=self.config.activation,
                                        lead_in_s=self.config.lead_in_s)
                r_t.append(a.mean())
                rows.append(a.n_rows)
                shares.append(a.expert_share * a.n_rows)
                if a.feature_cos is not None:
                    cos.append(a.feature_cos)
        if r_t:
            out["r_teacher"] = float(np.average(r_t, weights=rows))
            out["expert_share"] = np.sum(shares, axis=0) / sum(rows)
        if cos:
            out["feature_cos"] = float(np.mean(cos))
        r_f = []
        for st, _ in self.val:
            sel = st.split(self.config.val_split)
            if len(sel):
                from tinytribe.data.study import in_space

                scored = in_space(st, model.config.space)
                ev = E.score(scored, scored.split(self.config.val_split),
                             {"student": E.student_predictions(scored, sel, model, device=device)})
                r_f.append(ev.mean(ev.r["student"]))
        if r_f:
            out["r_fmri"] = float(np.mean(r_f))
        out["score"] = out.get("r_fmri", out.get("r_teacher", math.nan))
        return out


def one_teacher(studies: list[LoadedStudy], windows: list[StimulusWindow]) -> dict | None:
    """The teacher (id, revision) the windows' targets come from; two teachers are refused."""
    seen = {}
    for st in studies:
        for sid in {w.stimulus for w in windows if w.stimulus in st.stimuli}:
            tc = st.stimuli[sid].teacher
            if tc is not None:
                key = (tc.teacher.get("id", ""), tc.teacher.get("revision", ""))
                seen.setdefault(key, f"{st.study.name}/{sid}")
    if len(seen) > 1:
        (a, wa), (b, wb) = list(seen.items())[:2]
        raise ValueError(f"training targets come from two teachers: {a[0]}@{a[1]} ({wa}) and {b[0]}@{b[1]} ({wb})")
    return {"id": next(iter(seen))[0], "revision": next(iter(seen))[1]} if seen else None


def setup(studies: list, run_dir: str | Path, *, recipe: str = "phase2", model: str | Path | None = None,
          overrides: list[str] | None = None, init_from: str | Path | None = None, resume: str | Path | None = "auto",
          lazy: bool = False) -> Run:
    """Everything a Phase 2 run needs, fresh or resumed.

    Args:
        studies: study folders (or loaded studies): their training splits' teacher outputs are the targets.
        run_dir: the run folder (checkpoints, logs).
        recipe: a name in ``RECIPES``.
        model: a model config name or JSON file (fresh runs; None: ``init_from``'s sizes, else ``tiny-tribe-demo``).
        overrides: ``model.<key>=...``, ``loop.<key>=...``, ``kd.<key>=...`` settings.
        init_from: start from this checkpoint's weights (a Phase 1 checkpoint, or an earlier KD run),
            loading the tensors that fit (:func:`~tinytribe.model.checkpoint.load_partial`).
        resume: ``"auto"``: continue ``run_dir/checkpoints/last.pt`` when it exists -- with the model, recipe
            and loop settings it was made with (only ``loop.device``, ``num_workers``, ``stop_after``,
            ``tensorboard``, ``precision``, ``compile`` may change); a path; None: start afresh.
        lazy: read the studies' caches window by window (corpora larger than memory).
    """
    from tinytribe.data.study import load_study

    run_dir = Path(run_dir)
    s = start(run_dir, recipe, RECIPES, "kd", model=model, overrides=overrides or [], init_from=init_from,
              resume=resume)
    net, kd, loop, notes = s.model, s.config, s.loop, s.notes
    loaded = [st if isinstance(st, LoadedStudy) else load_study(st, lazy=lazy) for st in studies]
    rec = KDRecipe(loaded, net.config, kd, name=recipe)
    first = rec.dataset[0]
    width = first["teacher_acts"][kd.activation].shape[1] if kd.activation in first.get("teacher_acts", {}) else None
    if kd.weights.get("feature", 0) > 0 and width != net.config.teacher_dim:
        raise ConfigError(f"teacher activation {kd.activation!r} has {width} values per row, the model's KD head "
                          f"{net.config.teacher_dim} (model.teacher_dim)" if width else
                          f"the teacher outputs have no activation {kd.activation!r} (kd.activation, or "
                          f"kd.weights without 'feature')")
    net.config.trained_steps = max(net.config.trained_steps, rec.window_steps)
    notes += rec.notes
    notes.append(f"{recipe}: {len(rec.dataset)} training windows of {kd.window_s:g} s from "
                 f"{', '.join(st.study.name for st in loaded)} (split {kd.train_split!r}); teacher "
                 f"{rec.teacher['id']}@{rec.teacher['revision']}" if rec.teacher else "")
    return Run(net, rec, loop, run_dir, s.resume, notes)


def main(argv: list[str] | None = None) -> int:
    """``python -m tinytribe.train.phase2``: train Phase 2 (or the sprint) on studies' teacher outputs."""
    return runs.main(argv, "phase2", __doc__, "kd", RECIPES, "phase2", setup)


if __name__ == "__main__":
    sys.exit(main())
