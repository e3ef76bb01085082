# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Phase 1: self-supervised pre-training
#
# Needs no teacher and no fMRI: start it on day one, while teacher inference accumulates on Kaggle.
# The fusion model (projectors, motion module, embeddings, MoE transformer) learns from the cached
# features of any corpus — modalities a stimulus lacks are masked, never faked — with four tasks:
#
# - **masked reconstruction** (0.4): 0, 1 or 2 of a segment's modalities hidden; a head predicts the
#   hidden modality's projector output at its tokens (0.7 MSE + 0.3 (1 − cos));
# - **cross-modal contrastive** (0.2): two modalities of the same step are positives, other segments'
#   tokens and the same segment's tokens more than 4 s away are negatives (InfoNCE, τ = 0.07);
# - **next-step prediction** (0.2): a causal pass predicts the pooled representation one step ahead;
# - **temporal order** (0.1): four chunks, adjacent pairs swapped at random, each pair classified;
# - plus the MoE aux loss (0.01). AdamW, lr 3e-4, 5 % linear warm-up then cosine, batch 32.
#
# Notebook 04 then starts from `checkpoints/best.pt` (`init_from`; the embeddings stay frozen).
# Budgeted and resumable like the other training notebooks; stops with a reason on NaN/Inf, collapsed
# routing, or a reconstruction target that collapsed to a constant.

# %% tags=["parameters"]
study_dirs = ["runs/demo_study"]  # study or corpus folders (their "train" splits' stimuli; no teacher needed)
study_weights = {}  # sampling weight per study name (others 1)
run_dir = "runs/phase1"  # checkpoints/, train_log.csv, val_log.csv
model_config = "tiny-tribe-demo"  # "tiny-tribe-v3" for the full student
epochs = None  # None: the recipe's (10)
max_steps = None  # a number: train this many steps instead of epochs
batch_size = None  # None: the recipe's (32)
overrides = []  # more settings, each key and value joined by an equals sign (ssl.lr, loop.seed, ...)
resume = "auto"  # "auto": continue run_dir's last.pt; None: start afresh; or a checkpoint path
lazy = False
device = "auto"
session_limit_s = None  # None: this platform's session limit; a number: seconds for the training loop
reserve_s = 0.0  # seconds kept free at the end (Kaggle: 900 for the final push)
account = "default"
sync_remote = None  # "folder:...", "rclone:remote:folder" or "gdrive:<id>"
force_lock = False  # take the run folder's lock from a crashed session that still holds it
lease_s = 600.0  # item and run-folder lock leases (s), renewed every tenth; a killed session's work frees after one
tinytribe_source = None  # on Kaggle/Colab: a pinned pip source

# %%
# Install tinytribe when this kernel lacks it (a fresh Kaggle or Colab session), from the pinned source.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("tinytribe") is None:
    if not tinytribe_source:
        raise RuntimeError("tinytribe is not installed: set tinytribe_source to a pinned git tag or wheel")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", tinytribe_source], check=True)

# %%
# Refuse misspelled, mistyped or unknown-choice parameters before any work.
from tinytribe.notebook_params import check_parameters

check_parameters("03_phase1_selfsup", globals())

# %%
import json
from pathlib import Path

from tinytribe.config import ConfigError
from tinytribe.session import Session
from tinytribe.train import phase1
from tinytribe.train.loop import pick_device, pick_precision

if not isinstance(study_dirs, (list, tuple)) or not study_dirs:
    raise ConfigError(f"study_dirs must be a list of study folders, got {study_dirs!r}")
settings = list(overrides) + [f"loop.device={device}", f"ssl.study_weights={json.dumps(study_weights)}"]
for key, value in (("epochs", epochs), ("max_steps", max_steps), ("batch_size", batch_size)):
    if value is not None:
        settings.append(f"loop.{key}={int(value)}")
run_root = Path(run_dir)
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock,
                        planned=f"Phase 1 on {', '.join(map(str, study_dirs))}")
run = phase1.setup(study_dirs, run_root, model=model_config, overrides=settings, resume=resume, lazy=lazy)
for note in run.notes:
    print(note)
dev = pick_device(run.loop.device)
print(f"device {dev}, precision {pick_precision(dev, run.loop.precision)}; model {run.model.config.name} "
      f"({sum(p.numel() for p in run.model.parameters()) / 1e6:.2f}M parameters); "
      f"{run.loop.epochs if not run.loop.max_steps else run.loop.max_steps} "
      f"{'epochs' if not run.loop.max_steps else 'steps'} of batch {run.loop.batch_size}")

# %% [markdown]
# ## Training, budgeted and resumable

# %%
result = run.train(budget=session.loop_budget(session_limit_s),
                   after_checkpoint=(lambda: print(session.sync.push().line("pushed"))) if session.sync else None)
print(result.message)

# %%
session.finish(job="phase1")
if result.status in ("nan", "collapse"):
    raise RuntimeError(result.message)

# %% [markdown]
# ## Loss curves and monitors
# Each task's loss per step; the design's targets: reconstruction cosine > 0.6, contrastive R@1 within
# the batch > 60 %, routing entropy ≥ 0.7 ln E and every expert's share within [0.5/E, 2/E]; and each
# reconstruction target's variance across the batch (a fall towards 0 is a collapse).

# %%
import matplotlib.pyplot as plt
import numpy as np

from tinytribe.eval.plots import plot_training
from tinytribe.train.logs import read_log

train_log = read_log(run_root / "train_log.csv")
val_log = read_log(run_root / "val_log.csv") if (run_root / "val_log.csv").is_file() else None
fig = plot_training(train_log, val_log, terms=["loss", "recon", "contrast", "next", "order", "aux"],
                    n_experts=run.model.config.n_experts)
fig2, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for key, target in (("recon_cos", 0.6), ("r_at_1", 0.6), ("next_cos", None), ("order_acc", None)):
    if key in train_log:
        axes[0].plot(train_log["step"], train_log[key], lw=1, label=key)
axes[0].axhline(0.6, ls="--", color="grey", lw=1)
axes[0].set(xlabel="step", title="task monitors (design targets 0.6)")
axes[0].legend(fontsize=7)
for k in (k for k in train_log if k.startswith("target_var_")):
    axes[1].plot(train_log["step"], train_log[k], lw=1, label=k[len("target_var_"):])
axes[1].set(xlabel="step", ylabel="variance", yscale="log", title="reconstruction targets across the batch")
axes[1].legend(fontsize=7)
fig2.tight_layout()
first, last = slice(0, 10), slice(-10, None)
print(f"{'term':<10}{'first 10 steps':>16}{'last 10 steps':>15}")
for k in ("recon", "contrast", "next", "order", "aux"):
    print(f"{k:<10}{np.nanmean(train_log[k][first]):>16.4f}{np.nanmean(train_log[k][last]):>15.4f}")
