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
# What a model is judged by, on a study's held-out samples (whole stimuli, or time ranges inside a
# run): Pearson r per output over time, averaged over cortex (the medial wall excluded) and subjects;
# per ROI; against the **noise ceiling** (the expected r between a perfect model and one measured run,
# from repeated presentations, reliabilities pooled over subjects); beside baselines on the same samples:
#
# - **ridge**: a banded ridge encoding model (himalaya; one band per modality the stimuli have, FIR
#   delays 0–10 s, cross-validated regularisation) on the same cached features, fitted per subject;
# - **ridge (pooled)**: the same, fitted once on the group mean;
# - **low-level**: a ridge on word rate and the audio envelope alone (where the study has transcripts
#   and media) — the classic baselines reviewers ask for;
# - **teacher**: the cached teacher predictions (TRIBE v2, or the demo's imperfect teacher).
#
# Any output space: surface maps for meshes and parcellations, a named-ROI table for `custom:N`
# (ROI time courses). With a student checkpoint, the student too, its agreement with the teacher, its
# modality maps and its speed.

# %% tags=["parameters"]
study_dir = "runs/demo_study"  # a study folder (notebook 00_demo_study makes the demo)
split = "test"  # the held-out split
train_split = "train"  # what the ridge baselines are fitted on
checkpoint = None  # a student checkpoint (.pt); None: baselines only
device = "auto"
ridge_iterations = 20  # random-search iterations of the banded ridge
ridge_bands = None  # bands of the main ridge; None: the stimuli's modalities (may add "word_rate", "audio_envelope")
ridge_pooled = True  # also fit the ridge once on the group mean
low_level_bands = ["word_rate", "audio_envelope"]  # a ridge on these alone, those the study can make; [] skips it
detrend = None  # None, "linear", "polynomial" or "cosine" (0.01 Hz high-pass), before z-scoring
nan_policy = "error"  # NaN/Inf in fMRI runs: "error" (name them), "drop" (those TRs) or "interpolate" (along time)
out_dir = "runs/evaluate"  # report.json, maps.npz, stats.json, results.json, report.html (parcels.csv in a parcel space)
ablation = {"Phase 3 alone": None, "Phase 2 alone": "runs/phase2/checkpoints/best.pt",
            "Phase 2 → 3": "runs/phase3/checkpoints/best.pt", "Phase 1 → 2 → 3": None}  # row: checkpoint (None or missing: not scored)
stats_resamples = 1000  # block-bootstrap resamples and block permutations per model

# %%
# Refuse misspelled, mistyped or unknown-choice parameters before any work.
from tinytribe.notebook_params import check_parameters

check_parameters("06_evaluate", globals())

# %%
from pathlib import Path

import numpy as np

from tinytribe.data.study import load_study
from tinytribe.eval import evaluate as E
from tinytribe.eval.plots import plot_roi_bars, plot_surface_maps
from tinytribe.eval.ridge import RidgeConfig, band_problems
from tinytribe.eval.rois import rois_for_space, schaefer_vector
from tinytribe.eval.speed import measure
from tinytribe.spaces import PARCELLATIONS, has_surface, on_fsaverage5

if device == "auto":
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
study = load_study(study_dir, detrend=detrend, nan_policy=nan_policy)
space = study.study.space
runs, train = study.split(split), study.split(train_split)
rois = rois_for_space(space, study.study.output_names)
out = Path(out_dir)
for name in (train_split, split):
    parts = ", ".join(p if isinstance(p, str) else str(p) for p in study.study.splits[name])
    print(f"{name}: {parts}")
print(f"{study.study.name}: {runs.n_samples()} {split} samples in {len(runs)} runs of {len(study.subjects)} "
      f"subjects, {space}{', detrended ' + detrend if detrend else ''}")

# %% [markdown]
# ## Predictions

# %%
from tinytribe.model.checkpoint import load_checkpoint

predictions = {}
model = None
if checkpoint:
    model, ck = load_checkpoint(checkpoint)
    predictions["student"] = E.student_predictions(study, runs, model, device=device)
    print(f"student: {checkpoint} (phase {ck.phase}, step {ck.step})")
from tinytribe.eval.report import ablation_rows

checkpoints = {"student": checkpoint} if checkpoint else {}
ablation_notes = {}
for row, path in ablation_rows(ablation).items():   # the ablation's checkpoints, each scored like the student
    if not path or not Path(path).is_file():
        ablation_notes[row] = f"{path} does not exist" if path else "no checkpoint given"
        print(f"ablation {row}: not scored ({ablation_notes[row]})")
        continue
    row_model, row_ck = load_checkpoint(path)
    predictions[row] = E.student_predictions(study, runs, row_model, device=device)
    checkpoints[row] = path
    print(f"ablation {row}: {path} (phase {row_ck.phase}, step {row_ck.step})")
config = RidgeConfig(n_iter=ridge_iterations, bands=tuple(ridge_bands) if ridge_bands else None)
predictions["ridge"], ridge = E.ridge_predictions(study, train, runs, config)
print(f"ridge: bands {', '.join(ridge.bands)}; delays {', '.join(f'{d:.2f}' for d in ridge.delays_s)} s, "
      f"himalaya backend {ridge.backend}")
if ridge_pooled:
    predictions["ridge (pooled)"], _ = E.ridge_predictions(study, train, runs, RidgeConfig(
        n_iter=ridge_iterations, bands=config.bands, pooling="mean"))
skipped = band_problems(study, [*train, *runs], low_level_bands)
for band, why in skipped.items():
    print(f"low-level band {band} skipped: {why}")
low = [b for b in low_level_bands if b not in skipped]
if low:
    predictions["low-level"], _ = E.ridge_predictions(study, train, runs, RidgeConfig(n_iter=ridge_iterations,
                                                                                      bands=tuple(low)))
    print(f"low-level: ridge on {', '.join(low)}")
if all(study.stimuli[study.runs[i].stimulus].teacher is not None for i in runs):
    predictions["teacher"] = E.teacher_predictions(study, runs)
    print(f"teacher: {study.stimuli[study.runs[runs.runs[0]].stimulus].teacher.teacher['id']}")

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
models = list(ev.r)
fig = plot_roi_bars(ev.roi_table(rois), models, f"{study.study.name}, {split} split: mean r per ROI ({ev.space})")
figures = [{"title": "mean r per ROI", "path": "figures/roi_bars.png"}]
(out / "figures").mkdir(parents=True, exist_ok=True)
fig.savefig(out / "figures" / "roi_bars.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Intervals and significance
# Block-bootstrap confidence intervals (blocks of TRs: BOLD samples are autocorrelated), block-permutation
# p-values per output with Benjamini–Hochberg correction, R² beside r, and the Algonauts score (mean r over
# Schaefer-1000 parcels) where the space has those parcels.

# %%
from tinytribe.eval.study_stats import study_stats

stats = study_stats(study, runs, predictions, rois=rois, n_boot=stats_resamples, n_perm=stats_resamples)
print(stats.table())
stats.to_json(out / "stats.json")

# %% [markdown]
# ## Maps on the inflated fsaverage5 surface
# Best model's r, r / ceiling, the ceiling, and the modality maps: for the ridge, the variance each
# band explains (split R²); for the student, the r lost without each modality. A `custom:N` space has
# no mesh: its band table stands in for the maps.

# %%
best = max(models, key=lambda m: ev.mean(ev.r[m]))
modality = E.ridge_modality_maps(study, runs, ridge)
if has_surface(space):
    def surface(x: np.ndarray) -> np.ndarray:
        """(S, V) or (V,) values in the study space -> (20484,) on fsaverage5 (mean over subjects)."""
        return on_fsaverage5(ev.subject_mean(x) if x.ndim == 2 else x, space)

    maps = {f"r, {best}": surface(ev.r[best])}
    if ev.reliability is not None:
        ceiling = ev.ceiling_map()
        with np.errstate(invalid="ignore", divide="ignore"):  # r / ceiling only where the ceiling is not tiny
            maps[f"r / ceiling, {best} (ceiling > 0.2)"] = surface(np.where(ceiling > 0.2, ev.subject_mean(ev.r[best])
                                                                            / ceiling, np.nan))
        maps["noise ceiling (pooled)"] = surface(ceiling)
    fig = plot_surface_maps(maps, vmax=1.0)
    fig.savefig(out / "figures" / "maps.png", dpi=70, bbox_inches="tight")
    figures.append({"title": f"r of the best model ({best}), r / ceiling and the noise ceiling", "path": "figures/maps.png"})
    fig = plot_surface_maps({f"ridge: R² from {b}": surface(v) for b, v in modality.items()}, vmin=0.0, cmap="viridis")
    fig.savefig(out / "figures" / "ridge_bands.png", dpi=70, bbox_inches="tight")
    figures.append({"title": "variance each ridge band explains (split R²)", "path": "figures/ridge_bands.png"})
else:
    print(f"no surface maps: {space} has no mesh; per ROI, the held-out variance each ridge band explains (split R²):")
    w = max(len(r) for r in rois) + 2
    print(f"{'ROI':<{w}}" + "".join(f"{b:>16}" for b in modality))
    for roi, mask in rois.items():
        print(f"{roi:<{w}}" + "".join(f"{ev.mean(v, mask):>16.3f}" for v in modality.values()))
if model is not None:
    student_maps = E.student_modality_maps(study, runs, model, predictions["student"], device=device)
    if has_surface(space):
        fig = plot_surface_maps({f"student: r lost without {m}": surface(v) for m, v in student_maps.items()},
                                symmetric=True, cmap="RdBu_r")
    else:
        for m, v in student_maps.items():
            print(f"student: r lost without {m}: " + ", ".join(f"{roi} {ev.mean(v, k):.3f}" for roi, k in rois.items()))

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
         "ridge_bands": list(ridge.bands), "low_level_bands": low, "detrend": detrend}
if space in ("fsaverage5", "fsaverage4", "schaefer-400"):
    extra["schaefer400_r"] = {m: schaefer_vector(ev.subject_mean(ev.r[m]), space).tolist() for m in models}
if space in PARCELLATIONS:  # the parcel table: every parcel's r per model, and its ceiling
    table = E.save_parcel_table(ev, out / "parcels.csv")
    print(f"best parcels for {best}: " + ", ".join(f"{row['parcel']} {row[best]:.3f}" for row in
                                                   sorted(table, key=lambda row: -np.nan_to_num(row[best], nan=-1))[:10]))
ev.extra = extra
report = ev.to_json(out / "report.json", rois)
E.save_maps(ev, out / "maps.npz")
print(f"wrote {report} and {out / 'maps.npz'}")

# %% [markdown]
# ## The report
# One self-contained HTML file (no network, images inlined): the ablation table with intervals, ROI
# scores against the ceiling, maps, loss curves from the checkpoints' training logs, speed and the
# configuration. `tinytribe report OUT_DIR` rebuilds it from the saved `results.json`.

# %%
import datetime

from tinytribe.eval.report import ABLATION_ROWS, CONTRASTS, checkpoint_info, lineage_problem, write_report
from tinytribe.provenance import provenance

infos = {name: checkpoint_info(path, out) for name, path in checkpoints.items()}   # logs copied into out/logs
for name, info in infos.items():
    problem = lineage_problem(name, info["lineage"]) if name in ABLATION_ROWS else None
    if problem:
        info["lineage_problem"] = problem
        print(f"ablation {name}: {problem}")
teacher_id = (study.stimuli[study.runs[runs.runs[0]].stimulus].teacher.teacher.get("id")
              if "teacher" in predictions else None)
baseline = {"ridge": f"banded ridge on {', '.join(ridge.bands)}, fitted per subject on the {train_split} split",
            "teacher": f"cached teacher outputs ({teacher_id})" if teacher_id else
            "the study's stimuli have no teacher outputs"}
rows = [{"row": r, "model": r if r in predictions else None, "checkpoint": infos.get(r),
         "note": baseline.get(r, "" if r in predictions else ablation_notes.get(r, "no checkpoint given"))}
        for r in ABLATION_ROWS]
contrasts = {f"{a} − {b}": stats.contrast(a, b).to_dict() for a, b in CONTRASTS if a in predictions and b in predictions}
for name, iv in contrasts.items():
    print(f"{name}: {iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}] (paired block bootstrap)")
results = {"title": f"Tiny-TRIBE evaluation: {study.study.name}, {split} split",
           "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "provenance": provenance(), "demo": (Path(study_dir) / "demo.json").is_file(),
           "study": {"name": study.study.name, "space": space, "split": split, "subjects": ev.subjects,
                     "stimuli": ev.stimuli, "n_samples": ev.n_samples},
           "ceiling_mean": ev.ceiling_mean() if ev.reliability is not None else None,
           "rois_ceiling": {r["roi"]: r["ceiling"] for r in ev.roi_table(rois)} if ev.reliability is not None else {},
           "stats": stats.to_dict(), "ablation": rows, "contrasts": contrasts, "checkpoints": infos,
           "speed": extra["speed"], "figures": figures,
           "config": {"study_dir": str(study_dir), "split": split, "train_split": train_split, "detrend": detrend,
                      "nan_policy": nan_policy, "ridge_iterations": ridge_iterations,
                      "ridge_bands": list(ridge.bands), "ridge_pooled": ridge_pooled, "low_level_bands": low,
                      "stats_resamples": stats_resamples, "device": device}}
html_path = write_report(out, results)
print(f"wrote {html_path} ({html_path.stat().st_size / 1e6:.1f} MB)")
