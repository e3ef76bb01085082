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
# # 05 · Phase 3: fine-tuning on fMRI, new subjects, new output spaces
#
# The Phase 2 student (notebook 04) learns real fMRI, with the cached teacher as a regulariser: one
# forward pass gives each subject's prediction on its runs' TR grid (against its fMRI) and the average
# subject's on the teacher's grid (against the teacher), so the teacher shapes the shared model and the
# subjects' FiLM vectors learn how they differ. Backbones stay frozen (their features are cached).
#
# - **Recipe** `phase3` (the design's): 0.40 fMRI + 0.30 teacher + 0.10 feature + 0.10 temporal + 0.05
#   multi-resolution + 0.01 MoE aux; a window without a teacher drops the teacher terms and its other
#   weights are renormalised; modality dropout 0.3 → 0.1 → 0.0 over epochs 1–3, 4–6, 7–10; 50-TR windows,
#   then 100 after epoch 3; batch 4; 10 epochs. `sprint-fmri` is the 2-day sprint's Phase 3.
# - **Studies mixed** with per-study weights (a rate per window: 0.3 shows a study's windows 0.3 times as
#   often); a study without video (spoken stories) or with text alone trains with the rest masked.
# - **Student pseudo-labels** (design 5c): the Phase 2 student, run as a teacher on stimuli, adds
#   windows weighted 0.2 (the real teacher 0.3), only when its validation r reaches `pseudo_min_score`.
# - **A new subject** learns only its FiLM vectors from a few minutes of its fMRI; **a new output
#   space** (ROI time courses) gets a fresh head on the kept fusion model.
# - Budgeted and resumable like notebook 04; stops with a reason on NaN/Inf or collapsed routing.

# %% tags=["parameters"]
study_dirs = ["runs/demo_study", "runs/demo_stories"]  # study folders with fMRI (their "train" splits)
study_weights = {"demo-stories": 0.3}  # sampling weight per study name (others 1)
run_dir = "runs/phase3"  # checkpoints/, train_log.csv, val_log.csv
recipe = "phase3"  # "phase3" or "sprint-fmri"
model_config = None  # None: init_from's sizes (else tiny-tribe-demo); or a config name or JSON file
init_from = "runs/phase2/checkpoints/best.pt"  # the Phase 2 student; None: random init
epochs = None  # None: the recipe's (10; sprint-fmri 8)
max_steps = None  # a number: train this many steps instead of epochs
overrides = []  # more settings, each key and value joined by an equals sign (fmri.n_trs, loop.batch_size, ...)
hold_out_subject = "sub-04"  # left out of training (in every study: the demo's copy shares its runs), then adapted
pseudo_label = ["corpus01", "corpus02"]  # stimuli of the first study the init_from student pseudo-labels
pseudo_replace = True  # their student outputs replace real teacher outputs (the demo's corpus has them)
pseudo_min_score = 0.2  # the student's validation r they need (design: 0.20)
adapt_minutes = [0.5, 1.0, None]  # minutes of the held-out subject's training runs to adapt on (None: all; []: no adaptation)
adapt_steps = 300
roi_head = True  # also fit a head for ROI time courses (custom:N) of the first study, from this run
roi_epochs = 5  # epochs of the head-only stage
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

check_parameters("05_phase3_fmri", globals())

# %%
import json
from pathlib import Path

from tinytribe.config import ConfigError
from tinytribe.data.study import load_study
from tinytribe.session import Session
from tinytribe.train import phase3
from tinytribe.train.loop import pick_device, pick_precision

if not isinstance(study_dirs, (list, tuple)) or not study_dirs:
    raise ConfigError(f"study_dirs must be a list of study folders, got {study_dirs!r}")
if init_from and not Path(init_from).is_file():
    raise ConfigError(f"init_from: {init_from}: no such checkpoint (run notebook 04 first, or init_from=None)")
run_root = Path(run_dir)
studies = [load_study(d, lazy=lazy) for d in study_dirs]
first = studies[0]
settings = list(overrides) + [f"loop.device={device}", f"fmri.study_weights={json.dumps(study_weights)}",
                              f"fmri.pseudo_min_score={pseudo_min_score}"]
if epochs is not None:
    settings.append(f"loop.epochs={int(epochs)}")
if max_steps is not None:
    settings.append(f"loop.max_steps={int(max_steps)}")
if hold_out_subject:
    if hold_out_subject not in first.subjects:
        raise ConfigError(f"hold_out_subject: {first.study.name} has no subject {hold_out_subject!r}")
    settings.append(f"fmri.exclude_subjects={json.dumps([hold_out_subject])}")
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock,
                        planned=f"Phase 3 ({recipe}) on {', '.join(map(str, study_dirs))}")

# %% [markdown]
# ## Student pseudo-labels
# The Phase 2 student predicts the chosen stimuli from their cached features, through the same resumable
# teacher job as notebook 02 (`run_dir/pseudo/manifest.json`); each chunk records the checkpoint it came
# from and that checkpoint's validation score.

# %%
from tinytribe.train.pseudo import pseudo_label as run_pseudo_labels

if pseudo_label and init_from:
    unknown = [s for s in pseudo_label if s not in first.stimuli]
    if unknown:
        raise ConfigError(f"pseudo_label: {first.study.name} has no stimulus {unknown[0]!r}")
    specs = first.study.stimuli
    no_media = [s for s in pseudo_label if not specs[s].media]
    if no_media:
        raise ConfigError(f"pseudo_label: stimulus {no_media[0]!r} lists no media file in study.json")
    manifest = run_pseudo_labels(init_from, [first.root / specs[s].media for s in pseudo_label],
                                 (first.root / specs[pseudo_label[0]].features).parent, run_root / "pseudo",
                                 media_root=first.root, device=pick_device(device))
    settings += [f"fmri.pseudo_labels={json.dumps([str(manifest)])}", f"fmri.pseudo_replace={json.dumps(pseudo_replace)}"]
    print(f"pseudo-labels: {manifest}")

# %%
run = phase3.setup(studies, run_root, recipe=recipe, model=model_config, overrides=settings,
                   init_from=init_from, resume=resume)
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
session.finish(job="phase3")
if result.status in ("nan", "collapse"):
    raise RuntimeError(result.message)

# %% [markdown]
# ## Loss curves and monitors
# Every term per step (with the share of windows that had a real teacher, and pseudo-labels); at each
# validation r against fMRI per subject, the teacher-consistency MSE (a climb means the model is fitting
# fMRI noise: raise the teacher weight), each subject's FiLM gamma (they should grow apart), and routing.

# %%
import numpy as np

from tinytribe.eval.plots import plot_subject_monitors, plot_training
from tinytribe.train.logs import read_log

train_log = read_log(run_root / "train_log.csv")
val_log = read_log(run_root / "val_log.csv") if (run_root / "val_log.csv").is_file() else None
fig = plot_training(train_log, val_log, n_experts=run.model.config.n_experts)
if val_log is not None:
    fig2 = plot_subject_monitors(val_log)
print(f"windows with a real teacher: {np.nanmean(train_log['teacher_share']):.0%}; with pseudo-labels: "
      f"{np.nanmean(train_log['pseudo_share']):.0%}")

# %% [markdown]
# ## Validation table
# The best checkpoint on each study's val split beside the teacher (r against fMRI, each subject through
# its own FiLM row; the held-out subject through the average subject).

# %%
from tinytribe.eval import evaluate as E
from tinytribe.model.checkpoint import load_checkpoint

best_path = result.best or result.last
if result.status == "done" and best_path is not None:
    student, ck = load_checkpoint(best_path)
    print(f"{best_path.name}: step {ck.step}, val score {ck.metrics.get('score', float('nan')):.3f}")
    for st in run.recipe.studies:
        val = run.recipe.config.val_split
        if val in st.study.splits and len(st.split(val)):
            preds = {"student": E.student_predictions(st, st.split(val), student, device=dev)}
            if all(st.stimuli[st.runs[i].stimulus].teacher is not None for i in st.split(val)):
                preds["teacher"] = E.teacher_predictions(st, st.split(val))
            print(f"\n{st.study.name}, split {val!r}:")
            print(E.score(st, st.split(val), preds).table())

# %% [markdown]
# ## A new subject
# Everything frozen; the held-out subject gets its own FiLM scale and shift (2 × d_model numbers), fitted on
# the first minutes of its training runs, then scored on its val runs beside the average subject (which
# training never scored it on: a held-out subject does not choose the checkpoint). Pearson r ignores a
# vertex's gain and offset, which is much of what a FiLM row changes; the held-out MSE shows those.

# %%
from tinytribe import adapt
from tinytribe.eval.plots import plot_adaptation

if hold_out_subject and adapt_minutes and result.status == "done":
    curve = adapt.adaptation_curve(best_path, first, hold_out_subject, adapt_minutes, steps=adapt_steps, device=dev)
    print(f"{'minutes':>8}{'TRs':>6}{'r own FiLM':>12}{'r average':>11}{'MSE own':>9}{'MSE average':>13}{'seconds':>9}")
    for row in curve:
        print(f"{row['minutes']:>8.1f}{row['n_trs']:>6}{row['r_adapted']:>12.3f}{row['r_average']:>11.3f}"
              f"{row['mse_adapted']:>9.3f}{row['mse_average']:>13.3f}{row['seconds']:>9.1f}")
    fig3 = plot_adaptation(curve)
    adapted, report = adapt.adapt_subject(best_path, first, hold_out_subject, minutes=adapt_minutes[-1],
                                          steps=adapt_steps, device=dev)
    print(report.line())
    print(f"saved {adapt.save_adapted(adapted, run_root / f'adapted-{hold_out_subject}.pt', report)}")

# %% [markdown]
# ## A new output space: ROI time courses
# The first study's runs averaged in named ROIs (HCP-MMP1 early visual, auditory, language; the Yeo-7
# networks) make a `custom:N` study; the fusion model of this run is kept and a fresh head is fitted to
# it (the teacher, on the cortical mesh, does not map onto ROIs: its terms are off).

# %%
from tinytribe.eval.rois import named_rois, rois_for_space

if roi_head and result.status == "done" and first.study.space in ("fsaverage4", "fsaverage5"):
    rois = named_rois(first.study.space)
    roi_root = adapt.roi_study(first.root, run_root / "roi_study", rois)
    transfer = adapt.new_space(best_path, roi_root, run_root / "roi_head", head_epochs=roi_epochs,
                               overrides=[f"loop.device={device}"])
    for note in transfer["notes"]:
        print(note)
    print(transfer["head"].message)
    roi_model, _ = load_checkpoint(transfer["checkpoint"])
    roi_study_loaded = load_study(roi_root)
    val = roi_study_loaded.split("val")
    ev = E.score(roi_study_loaded, val, {"student (ROI head)": E.student_predictions(roi_study_loaded, val, roi_model,
                                                                                    device=dev)})
    print(ev.table(rois_for_space(roi_study_loaded.study.space, roi_study_loaded.study.output_names)))
elif roi_head:
    print(f"no ROI head: ROIs are defined on meshes, the first study is in {first.study.space}")
