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
# # 02 · Teacher inference (Phase 0)
#
# TRIBE v2 is run **once** over the chosen stimuli; its vertex predictions and two layers of its fusion
# transformer are cached chunk by chunk (`docs/FORMATS.md` §3) and never computed again. Schedule this
# notebook daily on Kaggle (see `kaggle/README.md`) -- on one account or several, each with its own
# manifest shard -- until the manifest is done.
#
# - **The real teacher** runs in its own virtual environment (TRIBE v2 pins `torch<2.7`, which would
#   replace the kernel's torch); it needs a GPU and the secret `HF_TOKEN` for the gated Llama-3.2-3B.
# - **The stand-in** (`teacher="standin"`, or `"auto"` on a machine without a GPU) is a small deterministic
#   function of the media with the same interface, for CI and rehearsals. Its outputs are not brain
#   predictions, and every file it writes says so (`teacher.id = tinytribe/standin`).
#
# Each chunk is written atomically, synced, then marked done; a session stops cleanly before its budget
# runs out, and failures are recorded with their reason and retried next session.

# %% tags=["parameters"]
media_dir = None  # folder of stimuli; None: the examples bundled with tinytribe
run_dir = "runs/teacher"  # manifest, teacher chunks, quota ledger
teacher = "auto"  # "tribev2", "standin", "demo", "module:Class", or "auto" (tribev2 with a GPU, else the stand-in)
teacher_options = {}  # keyword arguments for the teacher (the demo study's teacher: {"study": "<folder>"})
checkpoint = "facebook/tribev2"  # hub id or local folder of TRIBE v2 weights
device = "auto"
space = "fsaverage4"  # cache space: fsaverage5, fsaverage4 (the student's targets), schaefer-400, schaefer-1000
chunk_s = 150.0  # seconds of stimulus per manifest item
job_definition = None  # a manifests/*.json job definition to build the manifest from (priority order)
features_dir = None  # cached features (notebook 01) to choose segments from by diversity sampling ...
diversity_k = 300  # ... in this many k-means clusters of 30 s segments ...
diversity_per_cluster = 2  # ... keeping this many segments per cluster
session_limit_s = None  # None: this platform's session limit; a number: seconds for the loop
reserve_s = 0.0  # seconds kept free at the end of the session (Kaggle: 900 for the final push)
account = "default"
sync_remote = None  # "folder:...", "rclone:remote:folder" or "gdrive:<id>"
sync_every_s = 300.0
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

check_parameters("02_teacher_inference", globals())

# %%
from pathlib import Path

import tinytribe
from tinytribe import manifest as mf
from tinytribe.budget import has_accelerator
from tinytribe.eval.plots import plot_teacher
from tinytribe.features.decode import MEDIA_SUFFIXES
from tinytribe.formats import JobDefinition, Manifest
from tinytribe.runner import run_job
from tinytribe.session import Session
from tinytribe.teacher.cache import expected_storage, load_stimulus, measured_storage, teacher_job_work
from tinytribe.teacher.diversity import diversity_manifest
from tinytribe.teacher.protocol import load_teacher

if teacher == "auto":
    teacher = "tribev2" if has_accelerator() else "standin"
    if teacher == "standin":
        print("no GPU here: using the deterministic STAND-IN teacher (not brain predictions); "
              "set teacher='tribev2' on a GPU machine for the real one")
media_root = Path(media_dir) if media_dir else Path(tinytribe.__file__).parent / "assets" / "media"
run_root = Path(run_dir)
manifest_path = run_root / "manifest.json"
real = teacher == "tribev2"
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock, needs_gpu=real,
                        needs_secrets={"HF_TOKEN": "TRIBE v2's text extractor, Llama-3.2-3B, is gated on the Hugging "
                                                   "Face hub: accept its licence, then add your token as a secret"}
                        if real else None,
                        planned=f"{teacher} teacher on the media in {media_root} into {space}")

# %% [markdown]
# ## The job
# Every stimulus in `chunk_s` windows, the groups of a job definition in priority order, or -- from
# cached features -- a diverse selection of 30 s segments (k-means clusters, the segments nearest each
# centre). An existing manifest is never rebuilt: a later session resumes it.

# %%
def build() -> Manifest:
    if features_dir:
        m, sel = diversity_manifest(sorted(Path(features_dir).glob("*.npz")), k=diversity_k,
                                    per_cluster=diversity_per_cluster, media_root=media_root)
        print(sel.report())
        return m
    if job_definition:
        m, coverage = mf.build_from_definition(JobDefinition.load(job_definition), media_root,
                                               on_error=lambda src, err: print(f"skipped: {err}"))
        for c in coverage:
            print(c.line())
        return m
    media = sorted(p for p in media_root.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
    return mf.build_manifest(media, job="teacher", chunk_s=chunk_s, relative_to=media_root,
                             on_error=lambda src, err: print(f"unreadable (recorded as failed): {err}"))


manifest = mf.load_or_build(manifest_path, build)
if not features_dir:   # the manifest follows the folder (a diversity selection is a choice, not the folder)
    wanted = (mf.definition_media(JobDefinition.load(job_definition), media_root) if job_definition else
              sorted(p for p in media_root.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES))
    print(mf.reconcile(manifest_path, media_root, media=wanted).line())
    manifest = Manifest.load(manifest_path)
print(f"{manifest_path}: {mf.summarize(manifest).line()}")

# %% [markdown]
# ## Inference, budgeted and resumable

# %%
options = {"checkpoint": checkpoint, "device": device} if real else {}
model = load_teacher(teacher, **options, **teacher_options)
try:
    report = run_job(manifest_path, teacher_job_work(media_root, run_root / "teacher", model, space=space),
                     lease_s=lease_s, heartbeat_s=lease_s / 10, budget=session.loop_budget(session_limit_s),
                 after_item=session.pusher(sync_every_s))
finally:
    model.close()
print(report.line())
for item_id, error in report.failed:
    print(f"failed {item_id}: {error}")

# %% [markdown]
# ## Storage
# The design estimated ~220 MB per hour (fp32, fsaverage5, one row per 1.49 s TR) and ~35 GB for 320 h in
# fp16. TRIBE v2 really writes one row per second and its activations at 2 Hz, so the arrays alone take:

# %%
for sp in ("fsaverage5", "fsaverage4", "schaefer-400"):
    print(expected_storage(sp).line(f"expected, fp16, {sp}"))
if mf.summarize(Manifest.load(manifest_path)).done:
    print(measured_storage(manifest_path).line(f"measured here, {space}"))

# %%
session.finish(job="teacher")

# %% [markdown]
# ## What the teacher said
# One stimulus, its chunks stitched: predictions over BOLD time and the fusion activations' size over
# stimulus time.

# %%
m = Manifest.load(manifest_path)
done_stimuli = sorted({Path(it.source).stem for it in m.items if it.status == "done"})
if done_stimuli:
    fig = plot_teacher(load_stimulus(manifest_path, done_stimuli[0]))

# %%
print(f"{'finished' if report.summary.pending + report.summary.running == 0 else 'stopped'}: {report.line()}")
