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
# # 06 · Evaluate
#
# What a model is judged by, on a study's held-out stimuli: Pearson r per vertex over time, averaged
# over cortex (the medial wall excluded) and subjects; per ROI; against the **noise ceiling** (the
# expected r between a perfect model and one measured run, from repeated presentations); beside two
# baselines on the same samples:
#
# - **ridge**: a banded ridge encoding model (himalaya; one band per modality, FIR delays 0–10 s,
#   cross-validated regularisation) on the same cached features;
# - **teacher**: the cached teacher predictions (TRIBE v2, or the demo's imperfect teacher).
#
# With a student checkpoint, the student too, its agreement with the teacher, its modality maps and
# its speed. Without one (before the training phases have run) the notebook evaluates the baselines.

# %% tags=["parameters"]
study_dir = "runs/demo_study"  # a study folder (notebook 00_demo_study makes the demo)
split = "test"  # the held-out split
train_split = "train"  # what the ridge baseline is fitted on
checkpoint = None  # a student checkpoint (.pt); None: baselines only
device = "auto"
ridge_iterations = 20  # random-search iterations of the banded ridge
out_dir = "runs/evaluate"  # report.json, maps.npz

# %%
from pathlib import Path

import numpy as np

from tinytribe.data.study import load_study
from tinytribe.eval import evaluate as E
from tinytribe.eval.plots import plot_roi_bars, plot_surface_maps
from tinytribe.eval.ridge import RidgeConfig
from tinytribe.eval.rois import named_rois, schaefer_vector
from tinytribe.eval.speed import measure
from tinytribe.spaces import to_space

if device == "auto":
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
study = load_study(study_dir)
runs = study.split(split)
rois = named_rois(study.study.space)
out = Path(out_dir)
print(f"{study.study.name}: {len(runs)} {split} runs of {len(study.subjects)} subjects in {study.study.space}")

# %% [markdown]
# ## Predictions

# %%
predictions = {}
model = None
if checkpoint:
    from tinytribe.model.checkpoint import load_checkpoint

    model, ck = load_checkpoint(checkpoint)
    predictions["student"] = E.student_predictions(study, runs, model, device=device)
    print(f"student: {checkpoint} (phase {ck.phase}, step {ck.step})")
ridge_preds, ridge = E.ridge_predictions(study, study.split(train_split), runs,
                                         RidgeConfig(n_iter=ridge_iterations))
predictions["ridge"] = ridge_preds
print(f"ridge: delays {', '.join(f'{d:.2f}' for d in ridge.delays_s)} s, himalaya backend {ridge.backend}")
if all(study.stimuli[study.runs[i].stimulus].teacher is not None for i in runs):
    predictions["teacher"] = E.teacher_predictions(study, runs)
    print(f"teacher: {study.stimuli[study.runs[runs[0]].stimulus].teacher.teacher['id']}")

# %% [markdown]
# ## Scores

# %%
ev = E.score(study, runs, predictions)
print(ev.table(rois))
truth = Path(study_dir) / "truth" / "teacher_r.json"
if truth.is_file():  # the demo knows how good its teacher really is
    import json

    print(f"\nthe demo teacher against the noiseless truth: r = {json.loads(truth.read_text())['all responsive']:.3f} "
          f"in responsive cortex (so KD is never judged against an oracle)")

# %%
models = [m for m in ("student", "ridge", "teacher") if m in ev.r]
fig = plot_roi_bars(ev.roi_table(rois), models, f"{study.study.name}, {split} split: mean r per ROI ({ev.space})")

# %% [markdown]
# ## Maps on the inflated fsaverage5 surface
# Best model's r, r / ceiling, the ceiling, and the modality maps: for the ridge, the variance each
# modality's band explains (split R²); for the student, the r lost without each modality.

# %%
best = max(models, key=lambda m: ev.mean(ev.r[m]))


def surface(x: np.ndarray) -> np.ndarray:
    """(S, V) or (V,) values in the study space -> (20484,) on fsaverage5 (mean over subjects)."""
    return to_space(ev.subject_mean(x) if x.ndim == 2 else x, ev.space, "fsaverage5")


maps = {f"r, {best}": surface(ev.r[best])}
if ev.ceiling is not None:
    ceiling = ev.subject_mean(ev.ceiling)
    with np.errstate(invalid="ignore", divide="ignore"):  # r / ceiling only where the ceiling is not tiny
        maps[f"r / ceiling, {best} (ceiling > 0.2)"] = surface(np.where(ceiling > 0.2, ev.subject_mean(ev.r[best])
                                                                        / ceiling, np.nan))
    maps["noise ceiling"] = surface(ev.ceiling)
fig = plot_surface_maps(maps, vmax=1.0)

# %%
modality = E.ridge_modality_maps(study, runs, ridge.split_predictions)
fig = plot_surface_maps({f"ridge: R² from {m}": surface(v) for m, v in modality.items()}, vmin=0.0, cmap="viridis")
if model is not None:
    student_maps = E.student_modality_maps(study, runs, model, predictions["student"], device=device)
    fig = plot_surface_maps({f"student: r lost without {m}": surface(v) for m, v in student_maps.items()},
                            symmetric=True, cmap="RdBu_r")

# %% [markdown]
# ## Speed

# %%
import tinytribe

if model is None:
    from tinytribe.model import create_model

    model = create_model("tiny-tribe-demo")
    print("no checkpoint: timing an untrained tiny-tribe-demo (speed does not depend on the weights)")
speed = measure(model, device=device, media=Path(tinytribe.__file__).parent / "assets" / "media" / "astronaut_tour.mp4")
print(speed.line())

# %%
extra = {"speed": {"device": speed.device, "student_ms_per_s": speed.student_ms_per_s,
                   "end_to_end_ms_per_s": speed.end_to_end_ms_per_s},
         "schaefer400_r": {m: schaefer_vector(ev.subject_mean(ev.r[m]), ev.space).tolist() for m in models}}
ev.extra = extra
report = ev.to_json(out / "report.json", rois)
E.save_maps(ev, out / "maps.npz")
print(f"wrote {report} and {out / 'maps.npz'}")
