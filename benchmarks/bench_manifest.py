"""How long a manifest operation takes as the job grows (each claim/complete rewrites and fsyncs the file).

Usage: python benchmarks/bench_manifest.py [--items 2000]
Prints ms per claim+complete cycle and the manifest size; run on the machine you care about.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tinytribe import manifest as mf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--cycles", type=int, default=50)
    args = ap.parse_args()
    for n in args.items:
        with tempfile.TemporaryDirectory() as d:
            srcs = [f"video{i:05d}.mp4" for i in range(n)]
            m = mf.build_manifest(srcs, job="teacher", chunk_s=150, durations={s: 150.0 for s in srcs})
            path = Path(d) / "m.json"
            m.save(path)
            t0 = time.perf_counter()
            for _ in range(args.cycles):
                it = mf.claim_next(path, worker="bench")
                mf.complete(path, it.id, worker="bench", output="x.npz", output_sha256="0" * 64, seconds=1.0)
            dt = (time.perf_counter() - t0) / args.cycles
            print(f"{n:>6} items  {path.stat().st_size / 1024:8.0f} KiB  {dt * 1000:8.1f} ms per claim+complete")


if __name__ == "__main__":
    main()
