"""Phase 1: self-supervised pre-training of the fusion model on unlabelled features (design, "Phase 1 --
Self-supervised"). No teacher, no fMRI: it can start on day one while teacher inference accumulates.

    python -m tinytribe.train.phase1 --study runs/demo_study --run-dir runs/selfsup
    python -m tinytribe.train.phase2 --study ... --run-dir runs/kd --init runs/selfsup/checkpoints/best.pt

The model is the student's front: projectors, motion module, embeddings and the MoE transformer (the
HRF, pooling, output MLP, FiLM and projection are not trained here), with four heads of this phase
(saved in the checkpoint's ``heads_state``). Segments of 60 feature steps (30 s at 2 Hz), every 30
steps, from the studies' training splits; a modality a stimulus lacks is masked, never faked.
Tasks (:mod:`tinytribe.train.losses.selfsup`), from three passes per step:

- masked reconstruction (0.4): 0, 1 or 2 of a sample's modalities hidden (this is Phase 1's modality
  dropout: no other is added); a per-modality head predicts the hidden modality's projector output at
  its tokens (which went through the experts as queries);
- cross-modal contrastive (0.2) on the visible tokens of the same pass;
- next-step prediction (0.2): a causal pass (the same modalities hidden) predicts the non-causal
  pass's pooled representation one step ahead;
- temporal order (0.1): a pass over the segment with adjacent chunks swapped; each adjacent pair
  classified in order or swapped;
- MoE aux (0.01, the mean over the passes), with the router warm-up of Phase 2 from random init.

AdamW (weight decay 0.01), lr 3e-4, linear warm-up over 5 % of the steps then cosine, clip 1.0,
batch 32. The reconstruction target is the trainable projector's own output, which can collapse to a
constant: its variance across the batch is logged, and a collapse stops the run with a message
(the last good checkpoint kept).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinytribe.config import ConfigError
from tinytribe.data.study import LoadedStudy
from tinytribe.data.windows import WindowSampler, make_stimulus_windows
from tinytribe.formats import MODALITIES
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.train import runs
from tinytribe.train.losses import selfsup as S
from tinytribe.train.phase2 import Windows
from tinytribe.train.runs import Preset, Run, start

TERMS = ("recon", "contrast", "next", "order", "aux")


@dataclass
class SelfSupConfig:
    """The Phase 1 recipe's settings (design defaults).

    Attributes:
        segment_steps, stride_steps: segment length and step, in feature steps.
        train_split, val_split: where segments come from (a study without the split: all its stimuli).
        weights: loss weight per term (``TERMS``).
        tau: the contrastive temperature; gap_s: steps of the same sample closer than this are not
            negatives; contrast_dim: the contrastive embedding's width.
        n_chunks: chunks of the temporal-order task.
        lr: every parameter group's learning rate.
        study_weights: sampling weight per study (corpus) name, a rate per segment.
        collapse_var: a reconstruction target whose mean variance across the batch falls below this stops
            the run.
        router_warmup_steps, router_warmup_aux, router_warmup_temperature: as in Phase 2.
        init_from, freeze_embeddings: where the weights came from ("": random init); unused here.
    """

    segment_steps: int = 60
    stride_steps: int = 30
    train_split: str = "train"
    val_split: str = "val"
    weights: dict[str, float] = field(default_factory=lambda: {"recon": 0.4, "contrast": 0.2, "next": 0.2,
                                                               "order": 0.1, "aux": 0.01})
    tau: float = 0.07
    gap_s: float = 4.0
    contrast_dim: int = 128
    n_chunks: int = 4
    lr: float = 3e-4
    study_weights: dict[str, float] = field(default_factory=dict)
    collapse_var: float = 1e-4
    router_warmup_steps: int = 1000
    router_warmup_aux: tuple[float, float] = (0.1, 0.01)
    router_warmup_temperature: tuple[float, float] = (2.0, 1.0)
    init_from: str = ""
    freeze_embeddings: bool | None = None

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(TERMS)
        if unknown:
            raise ValueError(f"weights: unknown loss term {min(unknown)!r} (terms: {', '.join(TERMS)})")
        if self.segment_steps < 2 * self.n_chunks:
            raise ValueError(f"segment_steps {self.segment_steps} is too short for {self.n_chunks} chunks")


RECIPES = {"phase1": Preset(SelfSupConfig(), loop={"batch_size": 32, "warmup_frac": 0.05, "schedule": "cosine",
                                                   "weight_decay": 0.01, "grad_clip": 1.0})}


def _mlp(d_in: int, d_out: int, d_hidden: int, norm: bool = True) -> nn.Sequential:
    return nn.Sequential(*([nn.LayerNorm(d_in)] if norm else []), nn.Linear(d_in, d_hidden), nn.GELU(),
                         nn.Linear(d_hidden, d_out))


def pooled(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, T, M, D) -> (B, T, D): the mean over the modalities each step has."""
    w = keep[..., None].to(tokens.dtype)
    return (tokens * w).sum(2) / w.sum(2).clamp(min=1)


class SelfSupRecipe:
    """Phase 1 on the stimuli of one or more studies (corpora: no teacher or fMRI needed)."""

    phase = "selfsup"

    def __init__(self, studies: list[LoadedStudy], model: TinyTribe, config: SelfSupConfig, name: str = "phase1"):
        c = config
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise ConfigError("Phase 1 runs on one process: its passes call the model's encode directly, which "
                              "DistributedDataParallel would not synchronise (run it without torchrun)")
        self.name, self.config, self.studies = name, c, studies
        self.teacher = None
        self.notes: list[str] = []
        d = model.config.d_model
        self.heads = nn.ModuleDict({
            **{f"recon_{m}": _mlp(d, d, d) for m in MODALITIES},
            "contrast": _mlp(d, c.contrast_dim, d, norm=False),
            "next": _mlp(d, d, d),
            "order": _mlp(2 * d, 2, d)})
        unknown = set(c.study_weights) - {st.study.name for st in studies}
        if unknown:
            raise ConfigError(f"study_weights: no study named {min(unknown)!r}")
        self.rate = model.config.feature_rate_hz
        windows, self._groups = [], {}
        for si, st in enumerate(studies):
            parts = st.split_parts(c.train_split) if c.train_split in st.study.splits else None
            if parts is None:
                self.notes.append(f"{st.study.name} has no split {c.train_split!r}: every stimulus pre-trains")
            ws = make_stimulus_windows(st, parts, length_s=c.segment_steps / self.rate,
                                       stride_s=c.stride_steps / self.rate, grid="time",
                                       min_s=2 * c.n_chunks / self.rate)
            self._groups[st.study.name] = list(range(len(windows), len(windows) + len(ws)))
            windows += [(si, w) for w in ws]
        self._groups = {k: v for k, v in self._groups.items() if v}
        if not windows:
            raise ValueError(f"no segments in split {c.train_split!r} of {', '.join(st.study.name for st in studies)}")
        self.dataset = Windows(studies, windows, lead_in_s=0.0)
        self.window_steps = c.segment_steps
        self.val = []
        for st in studies:
            if c.val_split in st.study.splits:
                self.val.append((st, make_stimulus_windows(st, st.split_parts(c.val_split),
                                                           length_s=c.segment_steps / self.rate, grid="time",
                                                           min_s=2 * c.n_chunks / self.rate)))
        self.from_random_init = not c.init_from
        self.collapse_check_from = c.router_warmup_steps if self.from_random_init else 0

    def batches(self, epoch: int, batch_size: int, seed: int, world: int) -> list[list[int]]:
        sampler = WindowSampler(self._groups, {k: v for k, v in self.config.study_weights.items() if k in self._groups},
                                seed=seed)
        return [[i for _, i in b] for b in sampler.epoch_batches(epoch, batch_size, min_batch=world)]

    def param_groups(self, model: TinyTribe) -> list[dict]:
        """The front of the model (what Phase 2 starts from); the heads are added by the loop."""
        front = [*model.projectors.parameters(), *model.motion.parameters(), *model.embeddings.parameters(),
                 *model.fusion.parameters()]
        rest = [*model.hrf.parameters(), *model.pool.parameters(), *model.head.parameters(),
                *model.kd_head.parameters()]
        for p in rest:
            p.requires_grad_(False)
        return [{"name": "front", "params": front, "lr": self.config.lr}]

    def router_schedule(self, step: int) -> tuple[float, float]:
        """(aux weight, router temperature) at ``step`` (:func:`tinytribe.train.runs.router_schedule`)."""
        return runs.router_schedule(self.config, self.from_random_init, step)

    def terms(self, model: nn.Module, batch: dict, temperature: float = 1.0) -> tuple[dict, dict, np.ndarray]:
        """The unweighted terms of a batch, its monitors, and the routing of the masked pass."""
        c, h = self.config, self.heads
        feats, masks, available = batch["features"], batch["masks"], batch["available"].bool()
        dev = available.device
        content = available.clone()
        for i, m in enumerate(MODALITIES):
            content[:, i] &= masks[m].to(dev).bool().any(1)
        masked = S.draw_masked(content.cpu()).to(dev)
        # pass A: non-causal, some modalities hidden
        tokens, keys, aux, projected = model.encode(feats, available, masks=masks, masked=masked,
                                                    router_temperature=temperature, return_projected=True)
        queries = aux["query_mask"]
        preds = [h[f"recon_{m}"](tokens[:, :, i]) for i, m in enumerate(MODALITIES)]
        where = torch.cat([queries[:, :, i] for i in range(len(MODALITIES))], 1)          # (B, 3T)
        recon, recon_cos = S.reconstruction(torch.cat(preds, 1), torch.cat([projected[m] for m in MODALITIES], 1),
                                            where)
        z = F.normalize(h["contrast"](tokens), dim=-1)
        contrast, r1 = S.contrastive(z, keys, tau=c.tau, gap_steps=int(c.gap_s * self.rate))
        target = pooled(tokens, keys).detach()
        # pass B: causal, the same modalities hidden
        tokens_c, keys_c, aux_c = model.encode(feats, available, masks=masks, masked=masked, causal=True,
                                               router_temperature=temperature)
        nxt, next_cos = S.next_step(h["next"](pooled(tokens_c, keys_c)), target, keys.any(2) & keys_c.any(2))
        # pass C: chunks swapped
        T = tokens.shape[1]
        index, _, labels = S.swap_chunks(torch.arange(T, device=dev).expand(len(available), T), c.n_chunks)
        rows = torch.arange(len(available), device=dev)[:, None]
        swapped = {m: feats[m][rows, index] for m in MODALITIES if m in feats}
        swapped_masks = {m: masks[m][rows, index] for m in masks}
        tokens_o, keys_o, aux_o = model.encode(swapped, available, masks=swapped_masks, router_temperature=temperature)
        chunks = S.chunk_means(pooled(tokens_o, keys_o), keys_o.any(2), c.n_chunks)            # (B, K, D)
        logits = h["order"](torch.cat([chunks[:, :-1], chunks[:, 1:]], -1))                    # (B, K-1, 2)
        order = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
        order_acc = (logits.argmax(-1) == labels).float().mean().detach()
        terms = {"recon": recon, "contrast": contrast, "next": nxt, "order": order,
                 "aux": (aux["aux_loss"] + aux_c["aux_loss"] + aux_o["aux_loss"]) / 3}
        monitors = {"recon_cos": recon_cos, "r_at_1": r1, "next_cos": next_cos, "order_acc": order_acc,
                    "masked_share": masked.float().sum() / content.float().sum().clamp(min=1)}
        for m in MODALITIES:   # how much the targets vary across the batch's tokens (a collapse -> 0)
            seen = keys[:, :, MODALITIES.index(m)] | queries[:, :, MODALITIES.index(m)]
            if int(seen.sum()) >= 8:
                monitors[f"target_var_{m}"] = projected[m][seen].detach().float().var(0).mean()
        return terms, monitors, aux["expert_share"].float().cpu().numpy()

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        aux_weight, temperature = self.router_schedule(step)
        terms, monitors, share = self.terms(model, batch, temperature)
        weights = dict(c.weights, aux=aux_weight)
        total = sum(weights.get(k, 0.0) * v for k, v in terms.items())
        logs: dict[str, Any] = {**{k: v.detach() for k, v in terms.items()}, **monitors, "aux_weight": aux_weight,
                                "router_temperature": temperature, "expert_share": share}
        low = {k[len("target_var_"):]: float(v) for k, v in monitors.items() if k.startswith("target_var_")
               and float(v) < c.collapse_var}
        if low:
            m, v = next(iter(low.items()))
            logs["stop"] = (f"the {m} projector's outputs collapsed to a constant (variance {v:.1e} across the "
                            f"batch, below {c.collapse_var:g}): the reconstruction target is degenerate; restart "
                            f"from the last good checkpoint with a lower lr")
        return total, logs

    def validate(self, model: TinyTribe, device: str) -> dict[str, Any]:
        """The terms and monitors on the val split's segments, with masks and swaps fixed by seed 0
        (comparable across validations). ``score``: minus the weighted total."""
        from tinytribe.data.windows import collate, window_item
        from tinytribe.train.loop import to_device

        model.eval()
        rows, shares = [], []
        torch.manual_seed(0)   # (the loop keeps the training's random state apart from validation's)
        for st, windows in self.val:
            for k in range(0, len(windows), 8):
                batch = to_device(collate([window_item(st, w, lead_in_s=0.0) for w in windows[k:k + 8]]), device)
                with torch.no_grad():
                    terms, monitors, share = self.terms(model, batch)
                total = sum(self.config.weights.get(t, 0.0) * float(v) for t, v in terms.items())
                rows.append({**{t: float(v) for t, v in terms.items()}, **{m: float(v) for m, v in monitors.items()},
                             "total": total})
                shares.append(share)
        if not rows:
            return {"score": math.nan}
        out = {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}
        out["score"] = -out.pop("total")
        out["expert_share"] = np.mean(shares, axis=0)
        return out


def setup(studies: list, run_dir: str | Path, *, recipe: str = "phase1", model: str | Path | None = None,
          overrides: list[str] | None = None, init_from: str | Path | None = None, resume: str | Path | None = "auto",
          lazy: bool = False) -> Run:
    """Everything a Phase 1 run needs, fresh or resumed (as :func:`tinytribe.train.phase2.setup`; overrides
    ``model.<key>=...``, ``loop.<key>=...``, ``ssl.<key>=...``). Studies load without teacher outputs."""
    from tinytribe.data.study import load_study

    run_dir = Path(run_dir)
    loaded = [st if isinstance(st, LoadedStudy) else load_study(st, lazy=lazy, teacher=False) for st in studies]
    s = start(run_dir, recipe, RECIPES, "ssl", model=model, overrides=overrides or [], init_from=init_from,
              resume=resume)
    rec = SelfSupRecipe(loaded, s.model, s.config, name=recipe)
    s.model.config.trained_steps = max(s.model.config.trained_steps, rec.window_steps)
    summary = (f"{recipe}: {len(rec.dataset)} segments of {s.config.segment_steps} steps from "
               f"{', '.join(st.study.name for st in loaded)} (split {s.config.train_split!r}); no teacher, no fMRI")
    notes = [*s.notes, *rec.notes, summary]
    return Run(s.model, rec, s.loop, run_dir, s.resume, notes)


def main(argv: list[str] | None = None) -> int:
    """``python -m tinytribe.train.phase1``: self-supervised pre-training on studies' stimuli."""
    return runs.main(argv, "phase1", __doc__, "ssl", RECIPES, "phase1", setup)


if __name__ == "__main__":
    sys.exit(main())
