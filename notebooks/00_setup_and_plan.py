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
# # 00 · Setup and plan
#
# What this notebook does, on any platform (Kaggle, Colab, a laptop):
#
# 1. builds a **job manifest** for a folder of media: one item per chunk of stimulus time, kept in a
#    resumable JSON file (`docs/FORMATS.md`);
# 2. runs a **budgeted loop** over it: before each item it checks the time left in this session, and
#    stops cleanly (manifest saved, exit 0) when one more item would not fit. Run the notebook again,
#    in the same session or the next one, and it carries on where it stopped;
# 3. records the session in the **weekly quota ledger** beside the manifest;
# 4. shows what the media look like (frame luminance and audio level over time);
# 5. **plans** the real jobs: GPU hours, sessions, weeks, cost and storage for the teacher and
#    feature jobs on each platform.
#
# The job here is `probe`: it decodes every chunk of every file, which checks the media before the
# expensive jobs (`01_extract_features`, `02_teacher_inference`) run on them.
#
# With `sync_remote` set, the run folder is restored from the remote at the start (a new Kaggle or
# Colab session starts with an empty disk), pushed every `sync_every_s` seconds and at the end, and
# locked so that two sessions never write it at once. Credentials come from Kaggle Secrets / Colab
# userdata (README, "On Kaggle").

# %% tags=["parameters"]
media_dir = None  # folder of media files; None: the examples bundled with tinytribe
run_dir = "runs/setup"  # manifest, ledger and outputs go here
chunk_s = 6.0  # seconds of stimulus per manifest item (the teacher job uses 150)
session_limit_s = None  # None: this platform's session limit; a number: seconds for the loop (rehearsals, CI)
reserve_s = 0.0  # time kept back at the end of the session for checkpoint + sync
account = "default"  # whose weekly quota this session uses (one Kaggle account per person)
plan_hours = 15.0  # hours of stimulus to plan for (the design's "diverse video" list)
sync_remote = None  # None, "folder:/content/drive/MyDrive/tinytribe/setup", "rclone:gdrive:tinytribe/setup", "gdrive:<id>"
sync_every_s = 300.0  # push the run folder at most this often during the loop
force_lock = False  # take the run folder's lock from a crashed session that still holds it
lease_s = 600.0  # item and run-folder lock leases (s), renewed every tenth; a killed session's work frees after one
tinytribe_source = None  # on Kaggle/Colab: a pinned pip source, e.g. "git+https://github.com/<you>/tiny-tribe@v0.1.0"

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

check_parameters("00_setup_and_plan", globals())

# %%
from pathlib import Path

import tinytribe
from tinytribe import budget as bd
from tinytribe import manifest as mf
from tinytribe.eval.plots import load_probe_outputs, plot_media_probe
from tinytribe.features.decode import MEDIA_SUFFIXES
from tinytribe.runner import media_probe_work, run_job
from tinytribe.session import Session

media_root = Path(media_dir) if media_dir else Path(tinytribe.__file__).parent / "assets" / "media"
run_root = Path(run_dir)
manifest_path = run_root / "manifest.json"
session = Session.start(run_root, account=account, sync_remote=sync_remote, reserve_s=reserve_s,
                        lock_lease_s=lease_s, force_lock=force_lock,
                        planned=f"probe every {chunk_s:g} s chunk of the media in {media_root}")

# %% [markdown]
# ## 1. The job manifest
# Built once, then loaded: rerunning never rebuilds over finished work. Each run reconciles it with
# the media folder: new files get new items, a changed file's items are redone, a removed file's are
# marked `gone`; files whose duration cannot be read are recorded as failed, with the reason.

# %%
def build() -> mf.Manifest:
    sources = sorted(p for p in media_root.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES)
    return mf.build_manifest(sources, job="probe", chunk_s=chunk_s, relative_to=media_root,
                             on_error=lambda src, err: print(f"unreadable (recorded as failed): {err}"))


manifest = mf.load_or_build(manifest_path, build)
# new, fixed, changed and removed media since the manifest was made
changes = mf.reconcile(manifest_path, media_root,
                       media=sorted(p for p in media_root.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES))
print(changes.line())
manifest = mf.Manifest.load(manifest_path)
print(f"{manifest_path}: {mf.summarize(manifest).line()}")
for it in manifest.items[:5]:
    print(f"  {it.id:<28} {it.source:<24} {it.start_s:7.2f}-{it.end_s:7.2f} s  {it.status}")

# %% [markdown]
# ## 2. A budgeted run
# Each item is claimed under a lease, processed, and marked `done` with its output's hash. The loop
# stops when the session budget says one more item would not fit.

# %%
report = run_job(manifest_path, media_probe_work(media_root, run_root / "probe"),
                 lease_s=lease_s, heartbeat_s=lease_s / 10, budget=session.loop_budget(session_limit_s),
                 after_item=session.pusher(sync_every_s))
print(report.line())

# %%
session.finish(job="probe")
ledger = bd.QuotaLedger.load(run_root / "quota_ledger.json")
week_h = ledger.gpu_hours(account, at=session.budget.clock())
limit_h = bd.BudgetConfig().weekly_gpu_h(session.platform)
print(f"quota this week for {account!r} on {session.platform}: {week_h:.2f} GPU-h used"
      + (f" of {limit_h:.0f}" if limit_h else " (no weekly limit)"))

# %% [markdown]
# ## 3. What the media look like
# Frame luminance (blue) and audio level (orange) at 2 Hz, from the chunks finished so far.

# %%
outputs = load_probe_outputs(manifest_path)
if outputs:
    fig = plot_media_probe(outputs)
else:
    print("no chunk finished yet")

# %% [markdown]
# ## 4. Planning the real jobs
# The design's figures: TRIBE v2 runs at about 2× real time on a T4 (0.5 GPU-s per second of video),
# the tiny backbones with ASR at about 10× real time. Each session loses about a quarter of an hour
# to loading, restoring and syncing.

# %%
for job in ("teacher", "features"):
    print(f"{job} job over {plan_hours:g} h of stimulus")
    for row in bd.plan(plan_hours, job):
        print(f"  {row['platform']:<22} {row['gpu_hours']:>7.1f} GPU-h {row['sessions']:>4} sessions "
              f"{row['weeks']:>6.2f} weeks  ${row['usd']:.0f}")
sizes = bd.storage_gb(plan_hours)
print(f"storage (fp16): teacher cache {sizes['teacher_gb']:.1f} GB, feature cache {sizes['features_gb']:.2f} GB")

# %%
print(f"{'finished' if report.summary.pending + report.summary.running == 0 else 'stopped'}: {report.line()}")
