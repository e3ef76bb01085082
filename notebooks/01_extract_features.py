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
# # 01 · Extract features
#
# The three tiny frozen backbones turn every stimulus into feature sequences at 2 Hz, cached once
# and reused by every training phase:
#
# - **text**: words (from a transcript -- TextGrid, SRT, VTT, TSV, Algonauts TSV: `<stem>.<suffix>` or
#   `<stem>.words.tsv` beside the media or in a `transcripts/` folder -- or from Whisper tiny.en speech
#   recognition) embedded with their preceding context by all-MiniLM-L6-v2, with two timing channels
#   (word onsets per step, the share of the step with speech); the words of speech recognition are
#   saved as `<stimulus>.words.tsv` to inspect, correct and feed back;
# - **audio**: the Whisper-Tiny encoder on 30 s windows, averaged per 0.5 s step;
# - **video**: EfficientNet-Lite0 (offline default) or MobileViT-S on the frame at each step's centre.
#
# The job is a manifest of chunks: a budgeted, resumable loop extracts them, a killed run loses
# nothing done, and finished stimuli are stitched into `features/<stimulus>.npz`. Files that cannot
# be read are recorded as `failed` with the reason; the rest of the run completes.

# %% tags=["parameters"]
media_dir = None  # folder of media (and transcripts); None: the examples bundled with tinytribe
run_dir = "runs/features"  # manifest, chunk caches, stitched features
chunk_s = 60.0  # seconds of stimulus per manifest item (a multiple of 0.5 s)
video_backbone = "efficientnet-lite0"  # or "mobilevit-s" with video_model set to its weights
video_model = None  # weights for the video backbone; None: the offline copy
empty_transcript = "error"  # a transcript with no words: "error" (its item fails, saying why) or "asr" (warn, transcribe)
transcript_check = 0.0  # above 0: also run ASR beside transcripts, warn when one covers less of its speech than this
device = "auto"  # "cpu", "cuda" or "auto"
session_limit_s = None  # None: this platform's session limit; a number: seconds for the loop
reserve_s = 0.0
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

check_parameters("01_extract_features", globals())

# %%
from pathlib import Path

import tinytribe
from tinytribe import manifest as mf
from tinytribe.eval.plots import plot_features
from tinytribe.features.cache import (feature_job_work, reopen_stale, stitch_done, transcript_durations,
                                     transcript_only)
from tinytribe.features.decode import MEDIA_SUFFIXES
from tinytribe.features.extract import ExtractionConfig, FeatureExtractor, timing_table
from tinytribe.formats import FeatureCache, FormatError, Manifest
from tinytribe.runner import run_job
from tinytribe.session import Session

media_root = Path(media_dir) if media_dir else Path(tinytribe.__file__).parent / "assets" / "media"
run_root = Path(run_dir)
manifest_path = run_root / "manifest.json"
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock,
                        planned=f"features of the media in {media_root}, {chunk_s:g} s chunks")

# %% [markdown]
# ## The job
# One item per chunk of each media file; a transcript with no media beside it is a text-only stimulus.

# %%
files = sorted(p for p in media_root.iterdir() if p.is_file())
media = [p for p in files if p.suffix.lower() in MEDIA_SUFFIXES]
texts_only, left_out = transcript_only(files, media)
for note in left_out:
    print(note)


def build() -> mf.Manifest:
    return mf.build_manifest(media + texts_only, job="features", chunk_s=chunk_s, relative_to=media_root,
                             durations=transcript_durations(texts_only),
                             on_error=lambda src, err: print(f"unreadable (recorded as failed): {err}"))


manifest = mf.load_or_build(manifest_path, build)
# new, fixed, changed and removed media since the manifest was made
changes = mf.reconcile(manifest_path, media_root, media=media + texts_only, durations=transcript_durations(texts_only))
print(changes.line())
manifest = mf.Manifest.load(manifest_path)
print(f"{manifest_path}: {mf.summarize(manifest).line()}")

# %% [markdown]
# ## Extraction, budgeted and resumable

# %%
extractor = FeatureExtractor(ExtractionConfig(video=video_backbone, video_model=video_model, device=device,
                                               empty_transcript=empty_transcript, transcript_check=transcript_check))
stale = reopen_stale(manifest_path, media_root, extractor)  # an old cache format, a corrected transcript, ...
if stale:
    print(f"{len(stale)} finished chunks are out of date and will be extracted again: {', '.join(stale[:5])}"
          + (" ..." if len(stale) > 5 else ""))
report = run_job(manifest_path, feature_job_work(media_root, run_root, extractor),
                 lease_s=lease_s, heartbeat_s=lease_s / 10, budget=session.loop_budget(session_limit_s),
                 after_item=session.pusher(sync_every_s))
stitched = stitch_done(manifest_path, run_root)
print(report.line())
print(f"stitched {len(stitched)} stimuli: {', '.join(p.name for p in stitched) or '-'}")
for path in sorted(run_root.glob("*.npz")):  # where each stimulus's words came from
    try:
        print(f"words of {path.stem}: {FeatureCache.read_meta(path)['words_source']}")
    except FormatError as e:
        print(f"{path.name}: {e}")

# %%
m = Manifest.load(manifest_path)
media_s = sum(it.duration_s for it in m.items if it.id in report.processed)
print(timing_table(extractor.timings, media_s))
for it in m.items:
    if it.status == "failed":
        print(f"failed {it.id}: {it.last_error}")

# %%
session.finish(job="features")

# %% [markdown]
# ## What the features look like
# Each modality's first 64 dimensions over time; grey where the modality has no content (no audio
# track, silence before the first word, an audio-only story without video).

# %%
for path in sorted(run_root.glob("*.npz"))[:3]:
    try:
        fig = plot_features(FeatureCache.load(path))
    except FormatError as e:  # an old stitched file whose chunks are still being re-extracted
        print(f"{path.name}: {e}")

# %%
print(f"{'finished' if report.summary.pending + report.summary.running == 0 else 'stopped'}: {report.line()}")
