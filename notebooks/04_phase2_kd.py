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
# # 04 · Phase 2: distillation from the teacher cache
#
# The student learns the cached teacher (notebook 02): its predictions on the teacher's 1 Hz BOLD grid,
# its fusion activations (`fusion_l4`, through the KD head), its dynamics and its coarse maps. It never
# loads the teacher. Windows come from the **training split** only; validation uses the val split
# (r against the teacher on held-out stimuli, and against fMRI where the split has runs); the test
# split is never read.
#
# - **Recipes**: `phase2` (the design's Phase 2: 0.60 MSE + 0.20 feature + 0.10 temporal + 0.05
#   Schaefer-400 + 0.01 MoE aux; 150 s windows, batch 8, 10 epochs) or `sprint` (the design's "2-Day
#   Sprint": Schaefer-1000 output, 50-TR windows, 20 epochs, a checkpoint every 5 epochs).
# - **Budgeted and resumable**: before the session's time runs out the run writes
#   `checkpoints/last.pt` (pushed to the sync remote) and stops; running this notebook again resumes it
#   exactly where it stopped. `checkpoints/best.pt` keeps the best validation score.
# - **Stops with a reason** on NaN/Inf, or when routing collapses (an expert's share below 0.1/E, or
#   routing entropy below 0.3 ln E, three validations running), keeping the last good checkpoint.
# - Several GPUs: run `torchrun --nproc_per_node=N -m tinytribe.train.phase2 --study ... --run-dir ...`
#   in a terminal (the same run folder resumes here, and vice versa).

# %% tags=["parameters"]
study_dirs = ["runs/demo_study"]  # study or teacher-only corpus folders (their "train" splits are the targets)
run_dir = "runs/phase2"  # checkpoints/, train_log.csv, val_log.csv
recipe = "phase2"  # "phase2" or "sprint"
model_config = "tiny-tribe-demo"  # "tiny-tribe-v3" for the full student (fresh runs)
epochs = None  # None: the recipe's (10; sprint 20)
max_steps = None  # a number: train this many steps instead of epochs
overrides = []  # more settings, each key and value joined by an equals sign (kd.modality_dropout, ...)
init_from = None  # start from a checkpoint's weights (a Phase 1 checkpoint freezes the embeddings)
resume = "auto"  # "auto": continue run_dir's last.pt; None: start afresh; or a checkpoint path
lazy = False  # read caches window by window (corpora larger than memory)
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

check_parameters("04_phase2_kd", globals())

# %%
from pathlib import Path

from tinytribe.config import ConfigError
from tinytribe.session import Session
from tinytribe.train import phase2
from tinytribe.train.loop import pick_device, pick_precision

if not isinstance(study_dirs, (list, tuple)) or not study_dirs:
    raise ConfigError(f"study_dirs must be a list of study folders, got {study_dirs!r}")
settings = list(overrides) + [f"loop.device={device}"]
if epochs is not None:
    settings.append(f"loop.epochs={int(epochs)}")
if max_steps is not None:
    settings.append(f"loop.max_steps={int(max_steps)}")
run_root = Path(run_dir)
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock,
                        planned=f"Phase 2 ({recipe}) on {', '.join(map(str, study_dirs))}")
run = phase2.setup(study_dirs, run_root, recipe=recipe, model=model_config, overrides=settings,
                   init_from=init_from, resume=resume, lazy=lazy)
for note in run.notes:
    print(note)
dev = pick_device(run.loop.device)
print(f"device {dev}, precision {pick_precision(dev, run.loop.precision)}; model {run.model.config.name} "
      f"({sum(p.numel() for p in run.model.parameters()) / 1e6:.2f}M parameters, {run.model.config.space}); "
      f"{run.loop.epochs if not run.loop.max_steps else run.loop.max_steps} "
      f"{'epochs' if not run.loop.max_steps else 'steps'} of batch {run.loop.batch_size}")

# %% [markdown]
# ## Training, budgeted and resumable

# %%
result = run.train(budget=session.loop_budget(session_limit_s),
                   after_checkpoint=(lambda: print(session.sync.push().line("pushed"))) if session.sync else None)
print(result.message)

# %%
session.finish(job="phase2")
if result.status in ("nan", "collapse"):
    raise RuntimeError(result.message)

# %% [markdown]
# ## Loss curves and monitors
# Every loss term per step; at each validation the student's r against the teacher and against fMRI,
# the KD features' cosine with the teacher's (design target > 0.7), and routing: entropy as a fraction
# of ln E (healthy ≥ 0.7) and each expert's share in units of 1/E (healthy within the green band
# 0.5–2; the design's "> 1.5" and "10–15 %" are these for E = 8).

# %%
from tinytribe.eval.plots import plot_training
from tinytribe.train.logs import read_log

train_log = read_log(run_root / "train_log.csv")
val_log = read_log(run_root / "val_log.csv") if (run_root / "val_log.csv").is_file() else None
fig = plot_training(train_log, val_log, n_experts=run.model.config.n_experts)

# %% [markdown]
# ## Validation table
# The best checkpoint on the val split, beside the teacher it learnt from (r against fMRI where the split
# has runs, in the student's space; the student's agreement with the teacher).

# %%
import numpy as np

from tinytribe.data.study import in_space
from tinytribe.eval import evaluate as E
from tinytribe.model.checkpoint import load_checkpoint
from tinytribe.spaces import to_space

if val_log is not None:
    cols = [c for c in ("r_teacher", "r_fmri", "feature_cos", "route_entropy_frac", "min_share_e", "max_share_e")
            if c in val_log]
    print(f"{'step':>6}" + "".join(f"{c:>20}" for c in cols))
    for i in range(len(val_log["step"])):
        print(f"{int(val_log['step'][i]):>6}" + "".join(f"{val_log[c][i]:>20.3f}" for c in cols))
best_path = result.best or result.last
if result.status == "done" and best_path is not None:
    student, ck = load_checkpoint(best_path)
    print(f"\n{best_path.name}: step {ck.step}, val score {ck.metrics.get('score', float('nan')):.3f}")
    for st in run.recipe.studies:
        val = run.recipe.config.val_split
        if val in st.study.splits and len(st.split(val)):
            scored = in_space(st, student.config.space)
            preds = {"student": E.student_predictions(scored, scored.split(val), student, device=dev)}
            if all(st.stimuli[st.runs[i].stimulus].teacher is not None for i in st.split(val)):
                teacher = E.teacher_predictions(st, st.split(val))
                preds["teacher"] = {i: (np.asarray(to_space(p, st.study.space, student.config.space), np.float32), v)
                                    for i, (p, v) in teacher.items()}
            print(f"\n{st.study.name}, split {val!r}:")
            print(E.score(scored, scored.split(val), preds).table())
