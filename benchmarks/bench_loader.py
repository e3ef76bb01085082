"""The training data path on a corpus larger than memory: windows per second and peak memory.

Writes a synthetic corpus in the real formats (default 50 h: 150 stimuli of 20 min; 2 Hz features of
384 + 384 + 1280 dims, an fsaverage4 teacher at 1 Hz in 150 s chunks with two 1152-d activations at
2 Hz, all fp16 -- about 5 GB), loads it with ``load_study(lazy=True)``, and draws shuffled 150 s
windows (all targets) through a DataLoader with worker processes, batch 8. The first pass warms the
page cache; the second is timed. Peak RSS is the sum over the main process and its workers, sampled
every 50 ms. Target on 2 cores: >= 200 windows/s, RSS <= 3 GB.

Usage: python benchmarks/bench_loader.py [--hours 50] [--root DIR] [--workers 2] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STIMULUS_S = 1200.0
CHUNK_S = 150.0


def write_corpus(root: Path, hours: float, seed: int = 0) -> int:
    """The corpus in the feature-cache, teacher-cache and study formats; returns the number of stimuli."""
    from tinytribe.formats import FeatureCache, Study, StudyStimulus, TeacherChunk

    rng = np.random.default_rng(seed)
    n = max(1, int(round(hours * 3600 / STIMULUS_S)))
    T = int(STIMULUS_S * 2)
    stimuli = {}
    for s in range(n):
        sid = f"clip{s:03d}"
        feats = {m: rng.standard_normal((T, d), dtype=np.float32).astype(np.float16)
                 for m, d in (("text", 384), ("audio", 384), ("video", 1280))}
        FeatureCache(stimulus_id=sid, rate_hz=2.0, t0_s=0.0, features=feats, masks={m: np.ones(T, bool) for m in feats},
                     backbones={m: {"name": m, "revision": "synthetic", "layer": "-", "dim": a.shape[1]}
                                for m, a in feats.items()},
                     extraction={}, source=f"{sid}.mp4", source_sha256="0" * 64,
                     timing={"word_onsets": rng.poisson(1.0, T).astype(np.float32), "speech": rng.random(T, np.float32)}
                     ).save(root / "features" / f"{sid}.npz")
        chunks = []
        for c, a in enumerate(np.arange(0.0, STIMULUS_S, CHUNK_S)):
            rows = np.arange(a, a + CHUNK_S)                          # 1 Hz stimulus seconds
            acts = np.arange(a, a + CHUNK_S, 0.5)
            chunk = TeacherChunk(
                chunk_id=f"{sid}_{int(a):06d}", stimulus_id=sid, source=f"{sid}.mp4", start_s=float(a),
                end_s=float(a + CHUNK_S), space="fsaverage4",
                predictions=rng.standard_normal((rows.size, 5124), dtype=np.float32).astype(np.float16),
                bold_times_s=rows + 5.0,
                activations={k: rng.standard_normal((acts.size, 1152), dtype=np.float32).astype(np.float16)
                             for k in ("fusion_l4", "fusion_l6")},
                activation_times_s={"fusion_l4": acts, "fusion_l6": acts}, teacher={"id": "synthetic", "revision": "0"},
                hrf_offset_s=5.0)
            rel = f"teacher/{chunk.chunk_id}.npz"
            chunk.save(root / rel)
            chunks.append(rel)
        stimuli[sid] = StudyStimulus(duration_s=STIMULUS_S, features=f"features/{sid}.npz", teacher=chunks,
                                     modalities=["text", "audio", "video"])
    Study(name="synthetic-corpus", space="fsaverage4", subjects=[], stimuli=stimuli, runs=[],
          splits={"train": list(stimuli)}).save(root)
    return n


class RssSampler:
    """Peak resident memory of this process and its children, summed, sampled in a thread."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self.proc, self.every_s, self.peak, self._stop = psutil.Process(), every_s, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every_s)

    def __enter__(self) -> "RssSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=50.0)
    ap.add_argument("--root", help="corpus folder (default: a temporary one; reused when it holds a corpus)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the corpus")
    args = ap.parse_args()

    import torch

    from tinytribe.data.lazy import WindowDataset
    from tinytribe.data.study import load_study
    from tinytribe.data.windows import collate, make_stimulus_windows

    torch.set_num_threads(1)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="tt-corpus-"))
    try:
        if not (root / "study.json").is_file():
            t = time.perf_counter()
            n = write_corpus(root, args.hours)
            size = sum(p.stat().st_size for p in root.rglob("*.npz")) / 2**30
            print(f"wrote {n} stimuli ({args.hours:g} h, {size:.1f} GiB) in {time.perf_counter() - t:.0f} s")
        with RssSampler() as rss:
            t = time.perf_counter()
            study = load_study(root, lazy=True)
            windows = make_stimulus_windows(study, "train", length_s=150.0)
            print(f"lazy load: {len(study.stimuli)} stimuli, {len(windows)} windows of 150 s in "
                  f"{time.perf_counter() - t:.1f} s")
            loader = torch.utils.data.DataLoader(WindowDataset(study, windows), batch_size=args.batch, shuffle=True,
                                                 num_workers=args.workers, collate_fn=collate,
                                                 multiprocessing_context="fork" if args.workers else None,
                                                 persistent_workers=args.workers > 0)
            for label in ("warm-up (cold page cache)", "timed"):
                t, n = time.perf_counter(), 0
                for batch in loader:
                    n += batch["teacher"].shape[0]
                rate = n / (time.perf_counter() - t)
                print(f"{label}: {n} windows, {rate:.0f} windows/s")
        print(f"peak RSS (main + {args.workers} workers): {rss.peak / 2**30:.2f} GiB; one batch: "
              f"{sum(v.numel() * v.element_size() for v in batch['features'].values()) / 2**20:.0f} MiB of features")
    finally:
        if not args.keep and not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
