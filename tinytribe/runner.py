"""The one budgeted loop over a manifest, shared by every long job (probing, extraction, teacher).

``run_job`` claims an item, runs ``work(item)``, records the result, and asks the session budget
before each new item whether one more fits. It stops cleanly on budget: the manifest is always
valid, the item in flight is finished or given back, and the caller syncs and exits 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe import manifest as mf
from tinytribe._io import atomic_write_bytes, sha256_file
from tinytribe.budget import SessionBudget
from tinytribe.formats import Manifest, ManifestItem
from tinytribe.provenance import provenance


@dataclass
class RunReport:
    """What one call of :func:`run_job` did."""

    processed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped_on_budget: bool = False
    summary: mf.Summary | None = None

    def line(self) -> str:
        why = "stopped on the session budget" if self.stopped_on_budget else "nothing left to claim"
        return (f"{len(self.processed)} items done this session, {len(self.failed)} failed attempts; {why}. "
                f"Job: {self.summary.line() if self.summary else '?'}")


def _permanent() -> tuple[type, ...]:
    """Failures that another attempt would repeat: unreadable or corrupt media and transcripts, files
    not in their format, bad settings. They fail the item at once instead of re-running its work."""
    from tinytribe.config import ConfigError
    from tinytribe.features.decode import MediaError
    from tinytribe.features.words import TranscriptError
    from tinytribe.formats import FormatError

    return MediaError, TranscriptError, FormatError, ConfigError


def run_job(manifest_path: str | Path, work: Callable[[ManifestItem], Path | None], *,
            budget: SessionBudget, worker: str | None = None, lease_s: float = mf.LEASE_S,
            heartbeat_s: float = mf.HEARTBEAT_S, after_item: Callable[[ManifestItem], None] | None = None, progress: bool = True) -> RunReport:
    """Process the manifest's pending items until none is left or the budget says stop.

    Args:
        manifest_path: the manifest shard to work on.
        work: does one item and returns the path of its output (or None). An exception marks the
            attempt failed with its one-line message; the item is retried until ``max_attempts``,
            except for failures retrying cannot mend (unreadable media or transcripts, bad formats
            or settings), which fail it at once.
        budget: asked before each item.
        worker: this worker's name in leases (default ``host:pid``).
        lease_s: how long an item stays reserved for this worker without a heartbeat.
        heartbeat_s: how often the lease is renewed while the item is worked on (a killed worker's item
            is handed out again within ``lease_s``; on this machine at once).
        after_item: called after each finished or failed item (e.g. to sync outputs).
        progress: show a tqdm bar.
    """
    from tqdm import tqdm  # the text bar: papermill, Kaggle logs and terminals all show it

    manifest_path = Path(manifest_path)
    if not 0 < heartbeat_s < lease_s:   # a bad setting fails once, here, not every item
        raise ValueError(f"the heartbeat ({heartbeat_s} s) must come more often than the lease ({lease_s} s) runs out")
    worker = worker or mf.default_worker()
    report = RunReport()
    start = mf.summarize(Manifest.load(manifest_path))
    bar = tqdm(total=start.total, initial=start.done, desc=manifest_path.stem, unit="item", disable=not progress)
    try:
        while True:
            if budget.should_stop():
                report.stopped_on_budget = True
                break
            item = mf.claim_next(manifest_path, worker=worker, lease_s=lease_s)
            if item is None:
                break
            t0 = budget.clock()
            try:
                with mf.Heartbeat(manifest_path, item.id, worker=worker, lease_s=lease_s, every_s=heartbeat_s):
                    out = work(item)
            except KeyboardInterrupt:
                with contextlib.suppress(RuntimeError):   # not ours any more: nothing to give back
                    mf.release(manifest_path, item.id, worker=worker)
                raise
            except Exception as e:
                seconds = budget.clock() - t0
                budget.record_item(seconds)
                msg = f"{type(e).__name__}: {e}"
                try:
                    mf.fail(manifest_path, item.id, worker=worker, error=msg, permanent=isinstance(e, _permanent()))
                except RuntimeError as lost:   # another worker holds it now (this one was thought dead)
                    msg = f"lost its lease: {lost}"
                report.failed.append((item.id, msg))
                bar.write(f"failed {item.id}: {msg.splitlines()[0]}")
            else:
                seconds = budget.clock() - t0
                budget.record_item(seconds)
                stored = digest = None
                if out is not None:
                    out = Path(out)
                    digest = sha256_file(out)
                    try:
                        stored = os.path.relpath(out, manifest_path.parent)
                    except ValueError:  # another drive on Windows
                        stored = str(out)
                try:
                    mf.complete(manifest_path, item.id, worker=worker, output=stored, output_sha256=digest,
                                seconds=seconds)
                except RuntimeError as lost:   # taken by another worker meanwhile: its result will be recorded
                    bar.write(f"lost {item.id}: {lost}")
                    report.failed.append((item.id, f"lost its lease: {lost}"))
                else:
                    report.processed.append(item.id)
                    bar.update(1)
            if after_item is not None:
                after_item(item)
    finally:
        bar.close()
        report.summary = mf.summarize(Manifest.load(manifest_path))
    return report


def media_probe_work(media_root: str | Path, out_dir: str | Path, rate_hz: float = 2.0
                     ) -> Callable[[ManifestItem], Path]:
    """Work for a ``probe`` job: per item, the frame luminance and audio level at ``rate_hz``
    (decoded with PyAV), saved as ``<out_dir>/<item id>.npz``. It checks that every chunk of every
    file decodes, and gives a first look at the media, before the expensive jobs run."""
    from tinytribe.features.decode import audio_rms, frame_luminance

    media_root, out_dir = Path(media_root), Path(out_dir)

    def work(item: ManifestItem) -> Path:
        src = media_root / item.source
        lum = frame_luminance(src, item.start_s, item.end_s, rate_hz)
        rms = audio_rms(src, item.start_s, item.end_s, rate_hz)
        if np.isnan(lum).all() and np.isnan(rms).all():
            raise ValueError(f"{src}: nothing decodable between {item.start_s} s and {item.end_s} s")
        times = item.start_s + np.arange(lum.size) / rate_hz

        buf = io.BytesIO()
        meta = json.dumps({"item": item.id, "source": item.source, "rate_hz": rate_hz, **provenance()})
        np.savez(buf, times_s=times, luminance=lum, audio_rms=rms, meta=np.array(meta))
        return atomic_write_bytes(out_dir / f"{item.id}.npz", buf.getvalue())

    return work
