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
# # 00 · The demo study
#
# Real studies (CNeuroMod / Algonauts 2025, Lebel 2023, BOLD Moments) cannot be downloaded everywhere,
# so Tiny-TRIBE ships a study with a **known answer** that exercises every path of the pipeline:
#
# 1. **stimuli** from real material -- photos from scikit-image with camera motion, cuts and still
#    stretches; Aesop's fables spoken by espeak-ng; tones, noise bursts and silence; an audio-only
#    story and a silent clip; two clips shown three times (for noise ceilings); and a teacher-only
#    corpus (`corpus01` ...) of three times their minutes, with teacher outputs and no fMRI, as Phase 2's
#    real data are;
# 2. **features** by the real backbones through the normal extraction path (notebook 01);
# 3. **simulated subjects** on fsaverage5: visual, auditory, language and default-mode regions (from
#    HCP-MMP1 and Yeo-7) driven nonlinearly by video, audio and text, region-specific HRFs,
#    subject-specific weights, autocorrelated and spatially smooth noise; the true noise ceilings;
# 4. **an imperfect teacher** run through the normal teacher job (notebook 02): TRIBE v2's interface,
#    with structured errors (late, blurred, leaking across regions, slow spurious maps) and an r against
#    the truth below 1 -- about 0.75 of the noise ceiling in responsive cortex, above the ridge
#    baseline, as TRIBE v2 is on real data.
#
# Nothing in the library special-cases the demo: it is a study folder like any other.

# %% tags=["parameters"]
root = "runs/demo_study"  # the study folder
size = "small"  # "small" (minutes on 2 CPU cores) or "large" (for benchmarks)
seed = 0
space = "fsaverage4"  # the fMRI's space: fsaverage4 (the student's) or fsaverage5
teacher_r = 0.87  # the demo teacher's r against the truth in responsive cortex (r / ceiling about 0.75)
device = "cpu"  # for the feature backbones
stories_root = "runs/demo_stories"  # the same runs as an audio+text study (Phase 3's study mixing); None: none

# %%
# Refuse misspelled, mistyped or unknown-choice parameters before any work.
from tinytribe.notebook_params import check_parameters

check_parameters("00_demo_study", globals())

# %%
import json
from pathlib import Path

import numpy as np

from tinytribe.pipeline import run_notebook
from tinytribe.data.demo import build
from tinytribe.data.demo import subjects as sim
from tinytribe.data.study import load_study
from tinytribe.eval.ceiling import noise_ceiling
from tinytribe.eval.plots import plot_features, plot_frames, plot_surface_maps
from tinytribe.features.words import load_whisper, transcribe
from tinytribe.formats import FeatureCache
from tinytribe.spaces import upsample_fsaverage4

root = Path(root)
executed = root / "notebooks"  # the executed copies of notebooks 01 and 02

# %% [markdown]
# ## 1. Stimuli

# %%
media = build.make_stimuli(root, size=size, seed=seed)
for p in media:
    print(f"{p.name:<14}{p.stat().st_size / 1024:>7.0f} KiB")
fig = plot_frames(media)

# %% [markdown]
# ## 2. Features, through notebook 01
# Word events come from Whisper tiny.en speech recognition inside the extraction; here they are for one story.

# %%
run_notebook("01_extract_features", executed, {"media_dir": str(root / "stimuli"), "run_dir": str(root / "features"),
                                               "chunk_s": 60.0, "device": device})
story = next(p for p in media if p.stem.startswith("story"))
words = transcribe(story, load_whisper(device="cpu"))
print(f"{story.name}: {len(words)} words")
for w in words[:12]:
    print(f"{w.onset:6.2f} s  {w.duration:4.2f} s  {w.word}")
fig = plot_features(FeatureCache.load(root / "features" / f"{story.stem}.npz"))

# %% [markdown]
# ## 3. Simulated subjects

# %%
study = build.simulate(root, size=size, seed=seed, space=space)
scanned = {r.stimulus for r in study.runs}
print(f"{study.name}: {len(study.subjects)} subjects, {len(scanned)} stimuli with fMRI and "
      f"{len(study.stimuli) - len(scanned)} of a teacher-only corpus, {len(study.runs)} runs in {study.space}; "
      f"splits {', '.join(f'{k} {len(v)}' for k, v in study.splits.items())}")
g = sim.load_generator(root)
fig = plot_surface_maps({f"driven by {m}": v for m, v in sim.modality_maps(g).items()}, cmap="viridis")

# %% [markdown]
# ## 4. The teacher, through notebook 02

# %%
run_notebook("02_teacher_inference", executed, {"teacher": "demo", "teacher_options": {"study": str(root), "target_r": teacher_r},
                                                "media_dir": str(root / "stimuli"), "run_dir": str(root / "teacher_job"),
                                                "space": space, "chunk_s": 150.0})
teacher_r_by_region = build.attach_teacher(root, root / "teacher_job" / "manifest.json")
print(f"{'region':<16}{'teacher r vs truth':>20}")
for name, r in teacher_r_by_region.items():
    print(f"{name:<16}{r:>20.3f}")

# %% [markdown]
# ## 5. The study, loaded and validated; the noise ceiling
# The ceiling is the expected r between a perfect model and one measured run, √reliability, with the
# reliability from the repeated test clips by split-half correlation and Spearman–Brown
# (`tinytribe.eval.ceiling`). The simulator knows the true value.

# %%
loaded = load_study(root)
true_ceiling = np.load(root / "truth" / "ceiling.npy")
rows = []
for si, subject in enumerate(loaded.subjects):
    estimate = noise_ceiling(loaded.repeats(subject, loaded.split("test")))
    responsive = true_ceiling[si] > 0
    rows.append((subject, true_ceiling[si][responsive].mean(), estimate[responsive].mean(),
                 np.median(np.abs(estimate - true_ceiling[si])[responsive])))
print(f"{'subject':<9}{'true ceiling':>14}{'estimated':>11}{'median |error|':>16}  (responsive vertices)")
for s, t, e, err in rows:
    print(f"{s:<9}{t:>14.3f}{e:>11.3f}{err:>16.3f}")

# %%
regions = np.load(root / "truth" / "regions_fsaverage5.npy")
ceiling5 = np.load(root / "truth" / "ceiling_fsaverage5.npy")
with open(root / "truth" / "teacher_r.json") as f:
    print("teacher r by region:", json.load(f))
tr_map = np.full(20484, np.nan)
for k, name in enumerate(sim.REGIONS):
    tr_map[regions == k + 1] = teacher_r_by_region[name]
fig = plot_surface_maps({"true noise ceiling (sub-01)": ceiling5[0], "teacher r vs truth, by region": tr_map}, vmax=1.0)

# %% [markdown]
# ## 6. One vertex
# The most reliable early-visual vertex of sub-01 in the first test clip: its three measured runs, the
# truth, and the teacher's prediction (each z-scored).

# %%
import matplotlib.pyplot as plt

from tinytribe.spaces import fsaverage4_indices

columns = fsaverage4_indices() if loaded.study.space == "fsaverage4" else np.arange(20484)  # study column -> fsaverage5
early_visual = np.flatnonzero(regions[columns] == list(sim.REGIONS).index("early_visual") + 1)
vertex = early_visual[np.argmax(ceiling5[0][columns[early_visual]])]
best5 = columns[vertex]
test = loaded.study.splits["test"][0]
fig, ax = plt.subplots(figsize=(9, 2.8))
for r in loaded.runs:
    if r.subject == "sub-01" and r.stimulus == test:
        ax.plot(r.bold_times_s, r.fmri[:, vertex], color="0.6", lw=1, label="measured runs" if r.repeat == 0 else None)
truth = sim.sample_tr(sim.response(g, loaded.stimuli[test].features, 0), g.config.tr_s, len(r.bold_times_s))[:, best5]
ax.plot(r.bold_times_s, (truth - truth.mean()) / truth.std(), color="k", lw=2, label="truth (noiseless)")
tc = loaded.stimuli[test].teacher
tv = tc.predictions[:, vertex].astype(float)
ax.plot(tc.bold_times_s, (tv - tv.mean()) / tv.std(), color="tab:red", lw=1.5, label="teacher")
ax.set_xlabel("BOLD time (s)")
ax.set_ylabel("z")
ax.set_title(f"sub-01, {test}, fsaverage5 vertex {best5} (early visual, true ceiling {ceiling5[0][best5]:.2f})",
             fontsize=9, loc="left")
ax.legend(fontsize=7, ncol=3)
fig.tight_layout()

# %%
print(f"demo study ready: {root} ({len(loaded.runs)} runs, {len(loaded.stimuli)} stimuli, teacher r "
      f"{teacher_r_by_region['all responsive']:.2f})")

# %% [markdown]
# ## 7. The same runs as a study without video
# Phase 3 mixes studies: the design adds Lebel 2023's spoken stories (audio and text, no video) to a film
# study at weight 0.3. `audio_text_copy` presents the demo's runs as such a study: its stimuli list only
# text and audio (video is masked, never faked), and its subjects are other people to a model.

# %%
if stories_root:
    print(f"audio+text study: {build.audio_text_copy(root, stories_root)}")
