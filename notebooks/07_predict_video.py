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
# # 07 · Predict responses to any video
#
# A trained checkpoint and a video, audio file or transcript (or a folder of them) in; predicted
# cortical responses out, on a TR grid with explicit BOLD times (sample *k* covers
# `[k·TR, (k+1)·TR)` of stimulus time), for one of the checkpoint's subjects or the average subject:
#
# - `<stimulus>.npy` (+ `.times.npy`, `.json` with the provenance), `<stimulus>.h5`, and GIFTI
#   (`<stimulus>_space-<space>_hemi-{L,R}.func.gii`, one data array per TR with its time in the
#   metadata) that nibabel, nilearn, FreeSurfer and Workbench open;
# - the surface at three times, ROI time courses under the clip's frames and words (beside the
#   measured responses when a study has them), and a movie of the activity beside the clip.
#
# Features go through the feature cache (extracted once per file with the checkpoint's backbones);
# long media run in overlapping windows no longer than the model was trained on. The same from a shell:
# `tinytribe predict CHECKPOINT MEDIA --out DIR`.

# %% tags=["parameters"]
checkpoint = "runs/phase3/checkpoints/best.pt"  # a student checkpoint (notebook 05 or 04 makes one)
media = "runs/demo_study/stimuli/test01.mp4"  # a video, audio or transcript file, or a folder of them
out_dir = "runs/predict"  # outputs and pictures
cache_dir = "runs/predict/features"  # feature cache (a file is extracted once)
tr_s = None  # None: the checkpoint's training TR
subject = "tiny-tribe-demo/sub-01"  # one of the checkpoint's subjects (study/subject when two studies share it), or "average"
space = None  # None: the checkpoint's space; or one it reduces to (fsaverage4, schaefer-400, schaefer-1000)
formats = ["npy", "h5", "gifti"]
map_times = None  # BOLD times (s) to draw on the surface; None: three evenly spaced
movie = "gif"  # "gif", "mp4" or None
measured_study = "runs/demo_study"  # a study with fMRI of this stimulus to compare with; None: none
measured_subject = None  # None: the predicted subject (the average subject is compared with sub-01)
device = "auto"
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

check_parameters("07_predict_video", globals())

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt

from tinytribe.formats import Checkpoint
from tinytribe.model.checkpoint import model_from_checkpoint
from tinytribe.predict import extractor_for, media_files, predict, save_prediction

if device == "auto":
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
ck = Checkpoint.load(checkpoint)
model = model_from_checkpoint(ck, checkpoint)
cfg = model.config
data = ck.train_config.get("data", {})
subjects = [f"{a}/{b}" for a, b in cfg.subject_keys or []]
print(f"{checkpoint}: phase {ck.phase}, step {ck.step}; {cfg.name}, {cfg.space}; trained TR "
      f"{data.get('tr_s')}; backbones {data.get('backbones')}; subjects: {', '.join(subjects) or 'not recorded'}")
files = media_files([media])
extractor = extractor_for(ck, device=device)   # the backbones the checkpoint was trained on

# %% [markdown]
# ## Predict

# %%
predictions = []
for f in files:
    t0 = time.perf_counter()
    pred = predict(checkpoint, f, tr_s=tr_s, subject=subject, space=space, cache_dir=cache_dir,
                   extractor=extractor, device=device, model=model)
    written = save_prediction(pred, out_dir, formats)
    predictions.append((f, pred))
    print(f"{pred.stimulus}: {pred.responses.shape[0]} TRs of {pred.tr_s:g} s ({pred.info['tr_from']}) x "
          f"{pred.responses.shape[1]} outputs ({pred.space}), subject {pred.subject}, from "
          f"{', '.join(pred.info['modalities'])} ({pred.info['words_source']}); {len(pred.windows)} window(s); "
          f"{time.perf_counter() - t0:.1f} s")
    for p in written:
        print(f"  {p}  ({p.stat().st_size / 1e3:.0f} kB)")

# %% [markdown]
# The GIFTI files, read back the way other tools read them:

# %%
import nibabel as nib

f, pred = predictions[0]
for p in sorted(Path(out_dir).glob(f"{pred.stimulus}_space-*_hemi-*.func.gii")):
    img = nib.load(p)
    print(f"{p.name}: {len(img.darrays)} arrays of {img.darrays[0].data.shape[0]} vertices; first at "
          f"{img.darrays[0].meta['time_s']} s, last at {img.darrays[-1].meta['time_s']} s; "
          f"{img.meta['AnatomicalStructurePrimary']}")

# %% [markdown]
# ## Pictures
# The predicted response on the inflated surface at three times:

# %%
from tinytribe.eval.plots import plot_prediction_maps, plot_timecourses
from tinytribe.eval.rois import rois_for_space
from tinytribe.spaces import has_surface

if has_surface(pred.space):
    fig = plot_prediction_maps(pred, map_times)
    fig.savefig(Path(out_dir) / f"{pred.stimulus}_maps.png", dpi=90, bbox_inches="tight")
    plt.show()
else:
    print(f"{pred.space}: no surface to draw")

# %% [markdown]
# Time courses of named ROIs under the clip (frames at the top, word events below them), beside the
# measured responses of a subject who saw it, when `measured_study` has them:

# %%
from tinytribe.features.decode import MEDIA_SUFFIXES
from tinytribe.predict import PredictionError, measured_responses

measured = None
if measured_study:
    who = measured_subject or (pred.subject.split("/")[-1] if pred.subject != "average" else "sub-01")
    try:
        measured = measured_responses(measured_study, pred, who)
        print(f"measured: {who} in {measured_study}")
    except PredictionError as e:
        print(f"no measured responses: {e}")
all_rois = rois_for_space(pred.space, pred.output_names)
rois = {k: all_rois[k] for k in ("early visual", "auditory", "language", "default mode") if k in all_rois} \
    or dict(list(all_rois.items())[:4])
clip = f if f.suffix.lower() in MEDIA_SUFFIXES else None   # a transcript has no frames
fig = plot_timecourses(pred, rois, measured=measured, media=clip)
fig.savefig(Path(out_dir) / f"{pred.stimulus}_timecourses.png", dpi=90, bbox_inches="tight")
plt.show()

# %% [markdown]
# The predicted activity beside the clip, one frame per TR (lateral views; the clip's frame at the
# middle of each TR — responses lag the stimulus by about 5 s):

# %%
from IPython.display import Image, display

from tinytribe.eval.movie import write_movie

if movie and has_surface(pred.space):
    t0 = time.perf_counter()
    path = write_movie(pred, clip, Path(out_dir) / f"{pred.stimulus}_brain.{movie}")
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    if movie == "gif":
        display(Image(filename=str(path)))

# %% [markdown]
# Everything above on one self-contained page (no network, pictures inlined), to share or archive:

# %%
from tinytribe.eval.report import write_prediction_report

pictures = [(t, Path(out_dir) / f"{pred.stimulus}_{k}") for t, k in (
    ("predicted response on the inflated surface", "maps.png"), ("ROI time courses", "timecourses.png"),
    ("predicted activity beside the clip, one frame per TR", f"brain.{movie}"))]
page = write_prediction_report(Path(out_dir) / f"{pred.stimulus}_report.html", pred.metadata(), pictures)
print(f"{page} ({page.stat().st_size / 1e6:.1f} MB)")
