"""Building the demo study: seconds per step and peak memory, for the small or the large size.

Runs the same library steps as ``notebooks/00_demo_study`` (stimuli, feature job, simulation, teacher
job, loading and windowing) without the notebooks, so the numbers are the work alone.

Usage: python benchmarks/bench_demo.py [--size small|large] [--out DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="small", choices=["small", "large"])
    ap.add_argument("--out", help="study folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from tinytribe import manifest as mf
    from tinytribe.budget import SessionBudget
    from tinytribe.data.demo import build
    from tinytribe.data.study import load_study
    from tinytribe.data.windows import make_windows, window_item
    from tinytribe.features.cache import feature_job_work, stitch_done
    from tinytribe.features.extract import ExtractionConfig, FeatureExtractor
    from tinytribe.runner import run_job
    from tinytribe.teacher.cache import teacher_job_work
    from tinytribe.teacher.protocol import load_teacher

    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="tinytribe-demo-"))
    budget = SessionBudget.starting_now(1e9)
    times = {}

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = time.perf_counter() - t0
        print(f"{name:<12}{times[name]:8.1f} s", flush=True)
        return out

    media = step("stimuli", lambda: build.make_stimuli(root, size=args.size))
    seconds = sum(build.SIZES[args.size].seconds for _ in media)

    def features():
        run = root / "features"
        mf.load_or_build(run / "manifest.json", lambda: mf.build_manifest(media, job="features", chunk_s=60.0,
                                                                         relative_to=root / "stimuli"))
        ex = FeatureExtractor(ExtractionConfig(device="cpu"))
        run_job(run / "manifest.json", feature_job_work(root / "stimuli", run, ex), budget=budget, progress=False)
        stitch_done(run / "manifest.json", run)

    step("features", features)
    study = step("simulate", lambda: build.simulate(root, size=args.size))

    def teacher():
        run = root / "teacher_job"
        mf.load_or_build(run / "manifest.json", lambda: mf.build_manifest(media, job="teacher", chunk_s=150.0,
                                                                         relative_to=root / "stimuli"))
        t = load_teacher("demo", study=root)
        run_job(run / "manifest.json", teacher_job_work(root / "stimuli", run / "teacher", t), budget=budget,
                progress=False)
        return build.attach_teacher(root, run / "manifest.json")

    r = step("teacher", teacher)
    loaded = step("load", lambda: load_study(root))
    windows = make_windows(loaded, n_trs=50)
    step("windows", lambda: [window_item(loaded, w) for w in windows])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.size}: {len(media)} stimuli, {seconds / 60:.1f} min of media, {len(study.subjects)} subjects, "
          f"{len(study.runs)} runs, {len(windows)} windows of 50 TRs; teacher r vs truth {r['all responsive']:.2f}; "
          f"total {sum(times.values()):.0f} s, peak RSS {peak:.2f} GiB; study in {root}")


if __name__ == "__main__":
    main()
