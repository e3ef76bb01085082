"""The one training loop every phase shares: a recipe gives the data, the loss and the validation;
the loop does device, precision, optimiser, schedule, budget, checkpoints, exact resume, logs and DDP.

    recipe = KDRecipe(studies, model.config, KDConfig())
    result = train(model, recipe, LoopConfig(epochs=10), "runs/kd", budget=session.loop_budget())

A run folder holds ``checkpoints/last.pt`` (the latest state, for resuming) and ``checkpoints/best.pt``
(the best validation score), ``train_log.csv`` (every loss term and monitor per step) and
``val_log.csv`` (every validation). Resuming from ``last.pt`` continues the same batch order with the
same random state, so on one CPU a run stopped and resumed ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from tinytribe.config import to_dict
from tinytribe.data.study import data_summary
from tinytribe.formats import Checkpoint, FormatError
from tinytribe.model.checkpoint import save_checkpoint
from tinytribe.train import distributed as dist
from tinytribe.train.logs import CSVLog
from tinytribe.train.monitors import collapsed, routing_health
from tinytribe.train.state import epoch_batches, rng_state, seed_all, set_rng_state

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class LoopConfig:
    """How long and how to train, whatever the phase.

    Attributes:
        epochs: passes over the recipe's windows (``max_steps`` > 0 counts steps instead).
        batch_size: windows per optimiser step (the global batch, over all processes).
        weight_decay, grad_clip: AdamW's decay; the gradient norm clip.
        warmup_frac: the schedule's share of steps rising to each group's learning rate.
        schedule: ``onecycle`` (OneCycle, cosine warm-up and decay) or ``cosine`` (linear warm-up, then
            cosine decay to 0: Phase 1's).
        precision: ``auto``: bf16 autocast on GPUs from sm_80 (A100, H100), fp16 with gradient scaling
            on older ones (T4, P100: no bf16), fp32 on CPU and MPS.
        compile: ``torch.compile`` the model.
        val_every: validate every this many steps (0: at the end of each epoch); always at the end.
        checkpoint_every, checkpoint_every_epochs: write ``last.pt`` every this many steps / epochs (0: not).
        collapse_patience: validations in a row with collapsed routing that stop the run (counted from
            the recipe's ``collapse_check_from`` step: routing from random init is not judged during the
            router warm-up, when tokens still look alike to it and an expert can sit idle).
        num_workers: DataLoader workers (-1: 2 with a GPU, 0 on CPU).
        stop_after: end this session after this many steps, as a budget would (rehearsals; 0: no).
        tensorboard: also write TensorBoard events (needs ``pip install tensorboard``).
    """

    epochs: int = 10
    max_steps: int = 0
    batch_size: int = 8
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup_frac: float = 0.1
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    precision: Precision = "auto"
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    val_every: int = 0
    checkpoint_every: int = 200
    checkpoint_every_epochs: int = 0
    collapse_patience: int = 3
    num_workers: int = -1
    stop_after: int = 0
    tensorboard: bool = False


class Recipe(Protocol):
    """What a phase gives the loop (composition: any object with these members)."""

    name: str                    # recipe name, saved in checkpoints ("phase2", "sprint", ...)
    phase: str                   # checkpoint phase ("selfsup", "kd", "fmri", "adapt")
    config: Any                  # the recipe's resolved dataclass config
    dataset: Sequence[dict]      # training window items by index
    heads: nn.ModuleDict         # the phase's extra heads (trained and saved beside the model)
    teacher: dict | None         # {"id", "revision"} of the teacher the targets come from
    collapse_check_from: int     # routing is judged from this step on (after a router warm-up)

    # optional: ``batches(epoch, batch_size, seed, world) -> list[list[int]]``, the batches of dataset
    # indices of one epoch (a curriculum, per-study sampling weights), fixed by its arguments;
    # without it every epoch is a permutation of the whole dataset (``state.epoch_batches``)

    def param_groups(self, model: nn.Module) -> list[dict]: ...   # [{"name", "params", "lr"}]
    # loss logs may hold "stop": a one-line reason to stop the run as collapsed (the last good checkpoint kept)
    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]: ...
    def validate(self, model: nn.Module, device: str) -> dict[str, Any]: ...   # "score", metrics, "expert_share"


@dataclass
class TrainResult:
    """How a session of training ended: ``status`` ``done``, ``budget`` (stopped to resume later),
    ``nan`` or ``collapse`` (stopped, the last good checkpoint kept), with a one-line ``message``."""

    status: str
    step: int
    total_steps: int
    message: str
    last: Path | None = None
    best: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class TrainingStopped(RuntimeError):
    """A run stopped on NaN/Inf (``kind="nan"``) or collapsed routing (``"collapse"``); the message is
    the one-line reason."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def pick_device(requested: str = "auto") -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_precision(device: str, requested: Precision = "auto") -> str:
    """bf16 on CUDA sm_80+, fp16 (with gradient scaling) on older CUDA GPUs, fp32 elsewhere."""
    if requested != "auto":
        if requested != "fp32" and not device.startswith("cuda"):
            raise ValueError(f"precision {requested!r} needs a CUDA device (this run is on {device})")
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.get_device_capability(torch.device(device))[0] >= 8 else "fp16"
    return "fp32"


def to_device(x: Any, device: str) -> Any:
    """Tensors (and the time grids holding them) of a batch onto ``device``."""
    from tinytribe.model.timegrid import TimeGrid

    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, TimeGrid):
        return TimeGrid(x.times.to(device), x.width_s)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x


def train(model: nn.Module, recipe: Recipe, cfg: LoopConfig, run_dir: str | Path, *, budget=None,
          after_checkpoint: Callable[[], None] | None = None, resume: str | Path | None = "auto",
          progress: bool = True) -> TrainResult:
    """Train ``model`` with ``recipe`` until its steps are done, the budget says stop, or it fails.

    Args:
        model: the student (its weights are changed in place).
        recipe: the phase (:class:`Recipe`).
        cfg: the loop's settings.
        run_dir: where checkpoints and logs go.
        budget: a :class:`~tinytribe.budget.SessionBudget`; before it runs out the loop writes
            ``last.pt`` and returns ``status="budget"``.
        after_checkpoint: called after each checkpoint is written (a sync push).
        resume: ``"auto"`` (continue ``run_dir/checkpoints/last.pt`` when it exists), a checkpoint path,
            or None (start afresh, even over an old run).

    Returns:
        A :class:`TrainResult`. NaN/Inf in the loss, or routing collapsed for ``collapse_patience``
        validations running, stop the run with ``status`` ``"nan"`` / ``"collapse"`` and a one-line
        message; ``last.pt`` is then the last good state (no checkpoint is written while routing
        looks collapsed, except at the end).
    """
    run_dir = Path(run_dir)
    ck_dir = run_dir / "checkpoints"
    device = pick_device(cfg.device)
    d = dist.setup(device)
    device = dist.device_for(device, d)
    precision = pick_precision(device, cfg.precision)
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
           if precision in ("bf16", "fp16") else nullcontext())
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    model.to(device)
    recipe.heads.to(device)
    groups = recipe.param_groups(model)
    if len(recipe.heads):
        groups.append({"name": "heads", "params": [p for p in recipe.heads.parameters() if p.requires_grad],
                       "lr": groups[0]["lr"]})
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW([{"params": g["params"], "lr": g["lr"]} for g in groups], weight_decay=cfg.weight_decay)

    n = len(recipe.dataset)
    plan = EpochPlan(recipe, n, cfg, d.world)
    per_epoch = plan.count(0)
    if per_epoch == 0:
        raise ValueError(f"{recipe.name}: {n} training windows make no batch of {d.world} processes")
    total = cfg.max_steps or plan.steps_in(cfg.epochs)
    if cfg.schedule == "cosine":   # linear warm-up, then cosine to 0 (Phase 1's)
        warm = max(1, round(cfg.warmup_frac * total))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / warm if i < warm else
                                                  0.5 * (1 + math.cos(math.pi * (i - warm) / max(total - warm, 1))))
    elif total >= 2:   # warm-up of at least 1.5 steps: OneCycleLR divides by the warm-up's length
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total,
                                                    pct_start=min(max(cfg.warmup_frac, 1.5 / total), 0.9))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    data = {"n_windows": n, "batches_per_epoch": per_epoch, "world": d.world, "seed": cfg.seed, "total_steps": total}
    if plan.custom:   # a recipe's own epochs (a curriculum) may differ in length: the whole plan must match
        data["epoch_lengths"] = plan.lengths(total)
    step, best, streak, last_good = 0, -math.inf, 0, None
    metrics: dict[str, float] = {}
    last_path = ck_dir / "last.pt"
    resume_from = last_path if resume == "auto" and last_path.is_file() else (None if resume == "auto" else resume)
    if resume_from is not None:
        ck = Checkpoint.load(resume_from, map_location=device)
        if ck.recipe and ck.recipe != recipe.name:
            raise FormatError(f"{resume_from}: made by recipe {ck.recipe!r}, this run is {recipe.name!r} "
                              f"(start afresh with resume=None, or from its weights with init_from)")
        changed = [f"{k} {ck.data_position[k]} -> {v}" for k, v in data.items()
                   if k in ck.data_position and ck.data_position[k] != v]
        if changed:
            raise FormatError(f"{resume_from}: the data or processes changed since it was written ({', '.join(changed)}): "
                              f"resume with the same studies, batch size and number of processes, or start afresh")
        model.load_state_dict(ck.model_state)
        recipe.heads.load_state_dict(ck.heads_state.get("heads", {}))
        opt.load_state_dict(ck.optimizer_state)
        sched.load_state_dict(ck.scheduler_state)
        if ck.scaler_state:
            scaler.load_state_dict(ck.scaler_state)
        set_rng_state(ck.rng_state)
        if d.rank:   # the checkpoint holds rank 0's random state: the others draw their own masks
            seed_all(cfg.seed + d.rank + 7919 * ck.step)
        step, metrics = ck.step, dict(ck.metrics)
        best, streak = ck.data_position.get("best_score", -math.inf), ck.data_position.get("collapse_streak", 0)
        last_good = Path(resume_from)
    else:
        seed_all(cfg.seed + d.rank)
        if d.main and (ck_dir / "best.pt").is_file():   # a fresh run over an old one: its best is not ours
            (ck_dir / "best.pt").unlink()
    if step >= total:
        return TrainResult("done", step, total, f"{recipe.name}: already trained ({step} of {total} steps)",
                           last_good, _best(ck_dir), metrics)
    net = dist.wrap(model, d, device)
    if cfg.compile:
        net = torch.compile(net)

    log = val_log = writer = None
    if d.main:
        ck_dir.mkdir(parents=True, exist_ok=True)
        keep = step if resume_from is not None else None
        log = CSVLog(run_dir / "train_log.csv", ["step", "epoch", "time_s", "loss", "grad_norm",
                                                 *[f"lr_{g['name']}" for g in groups]], keep)
        val_log = CSVLog(run_dir / "val_log.csv", ["step", "epoch", "score"], keep)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard logging needs `pip install tensorboard`") from None
            writer = SummaryWriter(str(run_dir / "tensorboard"))

    def on_main(what: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only; when it fails, every process stops (no rank waits for a dead one)."""
        out, error = None, None
        if d.main:
            try:
                out = fn()
            except Exception as e:   # noqa: BLE001 -- re-raised below, on every rank
                error = e
        if dist.any_true(error is not None, d, device):
            if error is not None:
                raise error
            raise RuntimeError(f"{recipe.name}: rank 0 failed while {what}; see its output")
        return out

    data_info = data_summary(recipe.studies) if hasattr(recipe, "studies") else {}   # what predict checks

    def checkpoint(path: Path) -> Path:
        raw = model._orig_mod if hasattr(model, "_orig_mod") else model
        epoch, batch = plan.position(step)
        position = {**data, "epoch": epoch, "batch": batch, "best_score": best, "collapse_streak": streak}
        return save_checkpoint(raw, path, phase=recipe.phase, step=step, epoch=epoch,
                               data_position=position, optimizer_state=opt.state_dict(),
                               scheduler_state=sched.state_dict(), rng_state=rng_state(), metrics=metrics,
                               recipe=recipe.name, train_config={"recipe": to_dict(recipe.config), "loop": to_dict(cfg),
                                             "data": data_info},
                               heads_state={"heads": recipe.heads.state_dict()}, teacher=recipe.teacher,
                               scaler_state=scaler.state_dict() if scaler.is_enabled() else None)

    def save_last() -> None:
        nonlocal last_good

        def write() -> None:
            checkpoint(last_path)
            if after_checkpoint:
                after_checkpoint()

        on_main("writing a checkpoint", write)
        last_good = last_path

    train_shares: list[np.ndarray] = []   # routing of the training steps since the last validation

    def validate() -> None:
        nonlocal best, streak, metrics

        def run() -> str | None:
            nonlocal best, streak, metrics
            with torch.random.fork_rng(devices=[]):   # validation never moves the training's random state
                res = recipe.validate(model, device)
            model.train()
            share = res.pop("expert_share", None)
            if share is None and train_shares:   # no held-out windows to route: judge the training steps'
                share = np.mean(train_shares, axis=0)
            health = routing_health(share) if share is not None else {}
            metrics = {k: float(v) for k, v in {**res, **health}.items()}
            why = collapsed(health) if health and step >= recipe.collapse_check_from else None
            streak = streak + 1 if why else 0
            val_log.write({"step": step, "epoch": plan.epoch_float(step), **metrics})
            if writer:
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, step)
            if streak == 0 and math.isfinite(metrics.get("score", math.nan)) and metrics["score"] > best:
                best = metrics["score"]
                checkpoint(ck_dir / "best.pt")
            return why

        why = on_main("validating", run)
        train_shares.clear()
        best, streak = dist.broadcast([best, float(streak)], d, device)   # every rank decides alike below
        streak = int(streak)
        if streak >= cfg.collapse_patience:
            raise TrainingStopped("collapse", f"{recipe.name}: stopped at step {step}: routing collapsed for "
                                  f"{cfg.collapse_patience} validations running ({why or 'seen on rank 0'}); "
                                  f"last good checkpoint: {last_good or 'none yet'}")

    def stopped(kind: str, why: str) -> TrainingStopped:
        return TrainingStopped(kind, f"{recipe.name}: stopped at step {step}: {why}; last good checkpoint: "
                                     f"{last_good or 'none yet'}")

    first_epoch, first_batch = plan.position(step)
    bar = None
    if d.main and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=step, desc=recipe.name, unit="step", dynamic_ncols=True)
    session_steps = 0
    workers = cfg.num_workers if cfg.num_workers >= 0 else (2 if device != "cpu" else 0)
    model.train()
    try:
        epoch = first_epoch
        t_iter = time.perf_counter()
        while step < total:
            batches = plan.batches(epoch)
            start = first_batch if epoch == first_epoch else 0
            loader = torch.utils.data.DataLoader(
                recipe.dataset, batch_sampler=[dist.shard(b, d) for b in batches[start:]],
                collate_fn=_collate, num_workers=workers, pin_memory=device.startswith("cuda"),
                # its own generator: making a loader draws a seed, and must not move the training's random state
                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            for batch in loader:
                t_step = time.perf_counter()
                batch = to_device(batch, device)
                with amp:
                    loss, logs = recipe.loss(net, batch, step)
                share = logs.pop("expert_share", None)
                why = logs.pop("stop", None)   # a recipe's own collapse check (Phase 1's targets)
                if dist.any_true(why is not None, d, device):
                    raise stopped("collapse", why or "another process saw a collapse")
                if dist.any_true(not bool(torch.isfinite(loss)), d, device):
                    bad = [k for k, v in logs.items() if not math.isfinite(float(v))]
                    raise stopped("nan", f"loss is {float(loss.detach())} (non-finite terms: {', '.join(bad) or 'the total'})")
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                grad_norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                                           cfg.grad_clip)
                if not scaler.is_enabled() and dist.any_true(not bool(torch.isfinite(grad_norm)), d, device):
                    raise stopped("nan", f"the gradients are not finite (norm {float(grad_norm)}) with a finite loss")
                lrs = [pg["lr"] for pg in opt.param_groups]   # the rates this step used
                scaler.step(opt)   # with fp16 scaling, a step with overflowing gradients is skipped and the scale lowered
                scaler.update()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                session_steps += 1
                if d.main:
                    row = {"step": step, "epoch": plan.epoch_float(step), "time_s": time.perf_counter() - t_step,
                           "loss": float(loss.detach()), "grad_norm": float(grad_norm),
                           **{k: float(v) for k, v in logs.items()}, **{f"lr_{g['name']}": lr for g, lr in zip(groups, lrs)}}
                    if share is not None:
                        train_shares.append(np.asarray(share, np.float64))
                        health = routing_health(share)
                        row |= {k: health[k] for k in ("route_entropy_frac", "min_share_e")}
                    log.write(row)
                    if writer:
                        for k, v in row.items():
                            writer.add_scalar(f"train/{k}", v, step)
                    if bar:
                        bar.update(1)
                        bar.set_postfix({k: f"{row[k]:.3g}" for k in ["loss", *logs][:7]})
                end_of_epoch = plan.position(step)[1] == 0
                if step == total or (cfg.val_every and step % cfg.val_every == 0) or (not cfg.val_every and end_of_epoch):
                    validate()
                if (step == total or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
                        or (cfg.checkpoint_every_epochs and end_of_epoch
                            and plan.position(step)[0] % cfg.checkpoint_every_epochs == 0)):
                    if streak == 0 or step == total:   # while routing looks collapsed, last.pt stays the good one
                        save_last()
                if budget is not None:   # the whole iteration: data, step, validation, checkpoint and push
                    budget.record_item(time.perf_counter() - t_iter)
                t_iter = time.perf_counter()
                stop = (budget is not None and budget.should_stop()) or (cfg.stop_after and session_steps >= cfg.stop_after)
                if step < total and dist.any_true(bool(stop), d, device):
                    save_last()
                    return TrainResult("budget", step, total, f"{recipe.name}: stopped on the session budget at step "
                                       f"{step} of {total}; resume from {last_path}", last_good, _best(ck_dir), metrics)
                if step >= total:
                    break
            epoch += 1
        best_line = f"; best score {best:.4f}" if math.isfinite(best) else ""
        return TrainResult("done", step, total, f"{recipe.name}: finished {total} steps{best_line}", last_good,
                           _best(ck_dir), metrics)
    except TrainingStopped as e:
        return TrainResult(e.kind, step, total, str(e), last_good, _best(ck_dir), metrics)
    finally:
        if bar:
            bar.close()
        if writer:
            writer.close()


class EpochPlan:
    """The batches of each epoch -- the recipe's own (``recipe.batches``) or permutations of the whole
    dataset -- and where a step falls in them (epochs may differ in length: a curriculum)."""

    def __init__(self, recipe: Recipe, n: int, cfg: LoopConfig, world: int):
        self.custom = callable(getattr(recipe, "batches", None))
        self._make = ((lambda e: recipe.batches(e, cfg.batch_size, cfg.seed, world)) if self.custom else
                      (lambda e: epoch_batches(n, cfg.batch_size, e, cfg.seed, world)))
        self._counts: list[int] = []
        self._cache: tuple[int, list[list[int]]] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._make(epoch))
        return self._cache[1]

    def count(self, epoch: int) -> int:
        while len(self._counts) <= epoch:
            k = len(self._counts)
            self._counts.append(len(self.batches(k)))
            if self._counts[-1] == 0 and k > 0:   # (an empty first epoch is reported by train)
                raise ValueError(f"epoch {k} of the recipe's plan has no batch")
        return self._counts[epoch]

    def steps_in(self, epochs: int) -> int:
        return sum(self.count(e) for e in range(epochs))

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch within it) of the step that follows ``step`` steps."""
        epoch = 0
        while step >= self.count(epoch):
            step -= self.count(epoch)
            epoch += 1
        return epoch, step

    def epoch_float(self, step: int) -> float:
        epoch, batch = self.position(step)
        return epoch + batch / self.count(epoch)

    def lengths(self, total: int) -> list[int]:
        """The batches of every epoch the run's ``total`` steps reach."""
        last = self.position(max(total - 1, 0))[0]
        return [self.count(e) for e in range(last + 1)]


def _best(ck_dir: Path) -> Path | None:
    return ck_dir / "best.pt" if (ck_dir / "best.pt").is_file() else None


def _collate(items: list[dict]) -> dict:
    from tinytribe.data.windows import collate

    return collate(items)
