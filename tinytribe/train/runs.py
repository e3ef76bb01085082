"""What every phase's ``setup`` and command line share: settings from ``--<group>.<key>=value``
overrides, a fresh run or a resumed one (with the settings it was made with), a start from another
checkpoint's weights, and the command-line session (sync to a remote, several processes, a budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinytribe.config import ConfigError, apply_overrides, from_dict
from tinytribe.formats import Checkpoint
from tinytribe.model.config import ModelConfig
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.train.loop import LoopConfig, TrainResult, pick_device, pick_precision, train

DEFAULT_MODEL = "tiny-tribe-demo"
SESSION_KEYS = ("device", "num_workers", "stop_after", "tensorboard", "precision", "compile")  # may change on resume


@dataclass
class Run:
    """A run ready to train: the model, the recipe, the loop settings, and what setting it up said."""

    model: TinyTribe
    recipe: Any
    loop: LoopConfig
    run_dir: Path
    resume: Path | None
    notes: list[str]

    def train(self, **kwargs) -> TrainResult:
        return train(self.model, self.recipe, self.loop, self.run_dir, resume=self.resume, **kwargs)


@dataclass
class Preset:
    """A named recipe: its settings and what it changes in the loop and the model."""

    recipe: Any
    loop: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class Start:
    """How a run starts: its model, recipe settings and loop settings, the checkpoint it resumes (or
    None), and the checkpoint its weights came from (``init``, or None)."""

    model: TinyTribe
    config: Any
    loop: LoopConfig
    resume: Path | None
    init: Checkpoint | None
    notes: list[str]


def split_overrides(overrides: list[str], group: str) -> dict[str, list[str]]:
    """``--model.k=v``, ``--loop.k=v`` and ``--<group>.k=v`` overrides, by group (prefix removed)."""
    out: dict[str, list[str]] = {"model": [], "loop": [], group: []}
    for o in overrides:
        key = o.lstrip("-").split("=", 1)[0]
        g = key.split(".", 1)[0]
        if g not in out or "." not in key:
            raise ConfigError(f"override {o!r}: expected --model.<key>=..., --loop.<key>=... or --{group}.<key>=...")
        out[g].append(o.lstrip("-")[len(g) + 1:])
    return out


def start(run_dir: Path, recipe: str, recipes: dict[str, Preset], group: str, *, model: str | Path | None,
          overrides: list[str], init_from: str | Path | None, resume: str | Path | None,
          prepare: Callable[[TinyTribe], None] | None = None) -> Start:
    """Resolve a run's settings and build its model.

    Resuming (``resume="auto"`` and ``run_dir/checkpoints/last.pt`` exists, or a path) keeps the model,
    recipe and loop settings the checkpoint was made with: only ``SESSION_KEYS`` of the loop may change,
    other overrides are reported as ignored. A fresh run takes the preset, the overrides and
    ``model``'s config (None: the config of ``init_from``'s checkpoint, else ``tiny-tribe-demo``); ``init_from`` loads the tensors of that checkpoint that fit
    (:func:`~tinytribe.model.checkpoint.load_partial`) after ``prepare(model)`` (which may resize it:
    its subjects, its outputs), and records ``init_from`` in the recipe settings.
    """
    from tinytribe.model.checkpoint import load_partial, model_from_checkpoint
    from tinytribe.model.config import get_config

    if recipe not in recipes:
        raise ConfigError(f"unknown recipe {recipe!r} (known: {', '.join(recipes)})")
    groups = split_overrides(overrides, group)
    preset = recipes[recipe]
    cls = type(preset.recipe)
    notes: list[str] = []
    last = run_dir / "checkpoints" / "last.pt"
    resume_path = (last if last.is_file() else None) if resume == "auto" else (Path(resume) if resume else None)
    init: Checkpoint | None = None
    if resume_path is not None:
        ck = Checkpoint.load(resume_path)
        if ck.recipe != recipe:
            raise ConfigError(f"{resume_path}: a {ck.recipe or ck.phase!r} run, not {recipe!r}: give another run_dir, "
                              f"or start from its weights with init_from")
        net = model_from_checkpoint(ck, resume_path)
        cfg = from_dict(cls, ck.train_config["recipe"], where=f"{resume_path}: recipe config")
        saved = from_dict(LoopConfig, ck.train_config["loop"])
        asked = apply_overrides(LoopConfig(), groups["loop"])   # this session's own settings, else the defaults
        loop = dataclasses.replace(saved, **{k: getattr(asked, k) for k in SESSION_KEYS})
        saved_cfg = {"model": net.config, group: cfg, "loop": saved}
        ignored = [f"{g}.{o}" for g, cfg_g in saved_cfg.items() for o in groups[g]
                   if o.split("=", 1)[0] not in SESSION_KEYS and apply_overrides(cfg_g, [o]) != cfg_g]
        notes.append(f"resuming {resume_path} at step {ck.step} with its own model, recipe and loop settings"
                     + (f" (ignored: {', '.join(ignored)}; a new run_dir starts a run with them)" if ignored else ""))
    else:
        loop = apply_overrides(from_dict(LoopConfig, preset.loop), groups["loop"])
        cfg = apply_overrides(preset.recipe, groups[group])
        model_overrides = [f"{k}={v}" for k, v in preset.model.items()] + groups["model"]
        if model is None and init_from:   # the sizes of the checkpoint it starts from
            init = Checkpoint.load(init_from)
            net_cfg = apply_overrides(from_dict(ModelConfig, init.config, where=f"{init_from}: config"), model_overrides)
        else:
            net_cfg = get_config(model or DEFAULT_MODEL, model_overrides)
        torch.manual_seed(loop.seed)   # the same initial weights for the same seed
        net = TinyTribe(net_cfg)
        if prepare is not None:
            prepare(net)
        if init_from:
            init = init or Checkpoint.load(init_from)
            report = load_partial(net, init.model_state)
            notes.append(f"initialised from {init_from} ({init.phase}, step {init.step}): {report.line()}")
            freeze = cfg.freeze_embeddings if cfg.freeze_embeddings is not None else init.phase == "selfsup"
            cfg = dataclasses.replace(cfg, init_from=str(init_from), freeze_embeddings=freeze)
        else:
            cfg = dataclasses.replace(cfg, freeze_embeddings=bool(cfg.freeze_embeddings))
    pick_precision(pick_device(loop.device), loop.precision)   # a precision this device lacks fails here, in one line
    return Start(net, cfg, loop, resume_path, init, notes)


def parser(prog: str, doc: str, group: str, recipes: dict[str, Preset], default: str) -> argparse.ArgumentParser:
    """The arguments every phase's command line has."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                epilog=f"Settings: --model.<key>=value, --loop.<key>=value, --{group}.<key>=value "
                                       f"(e.g. --loop.epochs=2 --model.d_model=64).")
    p.add_argument("--study", action="append", required=True, help="a study folder (repeat for several)")
    p.add_argument("--run-dir", required=True, help="checkpoints and logs go here")
    p.add_argument("--recipe", default=default, choices=sorted(recipes))
    p.add_argument("--model", default=None, help="model config name or JSON file (fresh runs; default: --init's "
                                                 "sizes, else tiny-tribe-demo)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights")
    p.add_argument("--resume", default="auto", help="auto (continue run-dir's last.pt), none, or a checkpoint path")
    p.add_argument("--budget-s", type=float, default=None, help="stop (resumably) after this many seconds")
    p.add_argument("--lazy", action="store_true", help="read caches window by window (large corpora)")
    p.add_argument("--sync-remote", default=None, help="restore the run folder from this remote first, push "
                                                        "every checkpoint to it (folder:..., rclone:..., gdrive:...)")
    p.add_argument("--no-progress", action="store_true")
    return p


def session(args: argparse.Namespace, rest: list[str], setup: Callable[[list[str]], Run]) -> int:
    """Run one training session from the command line: restore from and push to ``--sync-remote``,
    agree across torchrun's processes on what to resume, train within ``--budget-s``. ``setup(rest)``
    builds the run. Returns the exit code (0: done or stopped on the budget; 1: stopped on NaN or
    collapse; 2: could not start)."""
    from tinytribe.budget import SessionBudget
    from tinytribe.train import distributed as dist

    d = dist.from_env()
    device = pick_device(next((o.split("=", 1)[1] for o in rest if o.lstrip("-").startswith("loop.device=")), "auto"))
    if d.active:   # join torchrun's process group first: the processes must agree on what they resume
        dist.setup(device)
        device = dist.device_for(device, d)
    sync = None
    if args.sync_remote and d.main:   # before setup, so that a run kept on the remote resumes
        from tinytribe.sync import RunSync, open_remote

        sync = RunSync(open_remote(args.sync_remote), args.run_dir, lease_s=600.0, heartbeat_s=60.0)
        sync.acquire()
        print(sync.restore().line("restored"))
    dist.barrier(d)
    error = None
    try:
        run = setup(rest)
        first = Checkpoint.load(run.resume).step if run.resume else 0
        if first != dist.broadcast([float(first)], d, device)[0]:
            error = (f"process {d.rank} would resume at step {first}, process 0 elsewhere: give every process the "
                     f"same run folder (shared storage), or restore it on every machine first")
    except (ConfigError, ValueError, OSError) as e:
        error = str(e)
    if dist.any_true(error is not None, d, device):
        print(f"error: {error or 'another process failed to set up'}", file=sys.stderr)
        if sync:
            sync.release()
        dist.teardown(d)
        return 2
    if d.main:
        for note in run.notes:
            print(note)
    budget = SessionBudget.starting_now(args.budget_s, reserve_s=0.0) if args.budget_s else None
    try:
        result = run.train(budget=budget, progress=not args.no_progress and d.main,
                           after_checkpoint=(lambda: print(sync.push().line("pushed"))) if sync else None)
    finally:
        if sync:
            print(sync.push().line("pushed"))
            sync.release()
        dist.teardown(d)
    if d.main:
        print(result.message)
    return 0 if result.status in ("done", "budget") else 1


def router_schedule(config: Any, from_random_init: bool, step: int) -> tuple[float, float]:
    """(aux weight, router temperature) at ``step``: from random init, the router warm-up of a recipe
    config (``router_warmup_steps``, ``router_warmup_aux``, ``router_warmup_temperature``, and the aux
    weight in ``weights``); otherwise the recipe's aux weight at temperature 1. No aux term: none in
    the warm-up either."""
    aux = config.weights.get("aux", 0.0)
    n = config.router_warmup_steps
    if not from_random_init or n <= 0 or step >= n:
        return aux, 1.0
    f = step / n
    (a0, a1), (t0, t1) = config.router_warmup_aux, config.router_warmup_temperature
    return (a0 + (a1 - a0) * f if aux > 0 else 0.0), t0 + (t1 - t0) * f


def main(argv: list[str] | None, module: str, doc: str, group: str, recipes: dict[str, Preset], default: str,
         setup: Callable[..., Run]) -> int:
    """A phase's ``python -m tinytribe.train.<module>``: its arguments, then :func:`session`."""
    p = parser(f"python -m tinytribe.train.{module}", doc, group, recipes, default)
    args, rest = p.parse_known_args(argv)
    return session(args, rest, lambda rest: setup(
        args.study, args.run_dir, recipe=args.recipe, model=args.model, overrides=rest, init_from=args.init,
        resume=None if args.resume == "none" else args.resume, lazy=args.lazy))
