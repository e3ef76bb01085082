"""Phase 2 quality and speed on the demo: the student distilled from the teacher-only corpus, against fMRI.

For each seed: the ``phase2`` recipe with ``tiny-tribe-demo`` on the study's training split (the
teacher-only corpus and the scanned training stimuli: teacher outputs only, no fMRI), the best
checkpoint by validation, then on the *test* split -- which training never reads -- r against fMRI
on responsive vertices (the simulation's driven cortex) beside the teacher's and the ridge's (fitted
on the training split's fMRI), and r(student, teacher). Target: the student's r >= 0.9 x the teacher's.
Training throughput is windows per second of optimiser steps (validation excluded).

Usage: python benchmarks/bench_phase2.py --study DIR [--seeds 0 1 2] [--epochs 10] [--threads 2] [--out FILE]
(a study from ``notebooks/00_demo_study`` with ``size=large``, or ``benchmarks/bench_demo.py --size large --out DIR``)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def responsive_mask(study_root: Path, space: str) -> np.ndarray:
    """The demo's driven vertices (its generator's regions) in the study space."""
    from tinytribe.data.demo.subjects import load_generator
    from tinytribe.spaces import reduce_space

    regions = load_generator(study_root).regions
    return reduce_space((regions != 0)[None].astype(np.float32), "fsaverage5", space)[0] > 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--recipe", default="phase2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    ap.add_argument("overrides", nargs="*", help="more settings (loop.batch_size=4, kd.window_s=100, ...)")
    args = ap.parse_args()

    import torch

    from tinytribe.data.study import in_space, load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.eval.ridge import RidgeConfig
    from tinytribe.model.checkpoint import load_checkpoint
    from tinytribe.train import phase2
    from tinytribe.train.logs import read_log

    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    test = study.split("test")
    space = study.study.space
    t0 = time.perf_counter()
    cache = args.study / "bench_ridge_test.npz"   # the ridge does not depend on the student: fitted once per study
    if cache.is_file():
        with np.load(cache) as z:
            ridge = {int(k): (z[k], np.ones(z[k].shape[0], bool)) for k in z.files}
    else:
        ridge, _ = E.ridge_predictions(study, study.split("train"), test, RidgeConfig(n_iter=20))
        np.savez(cache, **{str(i): p for i, (p, _) in ridge.items()})
    ridge_s = time.perf_counter() - t0
    teacher = E.teacher_predictions(study, test)
    base = E.score(study, test, {"teacher": teacher, "ridge": ridge})
    mask = responsive_mask(args.study, space) & base.cortex

    def responsive(r: np.ndarray) -> float:
        return float(np.nanmean(np.nanmean(r[:, mask], axis=1)))

    rows = []
    for seed in args.seeds:
        run_dir = Path(tempfile.mkdtemp(prefix=f"bench-phase2-{seed}-"))
        run = phase2.setup([study], run_dir, recipe=args.recipe, overrides=[
            f"loop.seed={seed}", f"loop.epochs={args.epochs}", f"loop.device={args.device}", *args.overrides])
        t0 = time.perf_counter()
        result = run.train(progress=False)
        wall = time.perf_counter() - t0
        log = read_log(run_dir / "train_log.csv")
        step_s = float(np.nansum(log["time_s"]))
        student, ck = load_checkpoint(result.best or result.last)
        scored = in_space(study, student.config.space)
        preds = {"student": E.student_predictions(scored, test, student, device=args.device)}
        if student.config.space == space:
            preds["teacher"], preds["ridge"] = teacher, ridge
        ev = E.score(scored, test, preds)
        m = mask if student.config.space == space else np.ones(scored.study.n_outputs, bool)
        row = {"seed": seed, "steps": result.step, "best_step": ck.step, "train_wall_s": wall,
               "windows_per_s": result.step * run.loop.batch_size / step_s,
               "student_r_responsive": float(np.nanmean(np.nanmean(ev.r["student"][:, m], axis=1))),
               "student_r_cortex": ev.mean(ev.r["student"]),
               "r_student_teacher_responsive": float(np.nanmean(np.nanmean(ev.agreement["student"][:, m], axis=1)))
               if "student" in ev.agreement else None,
               "val": {k: v for k, v in ck.metrics.items()}}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "val"}), flush=True)

    def stat(key: str) -> tuple[float, float]:
        v = np.array([r[key] for r in rows if r[key] is not None], float)
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0

    teacher_r, ridge_r = responsive(base.r["teacher"]), responsive(base.r["ridge"])
    s_mean, s_sd = stat("student_r_responsive")
    summary = {
        "study": str(args.study), "space": space, "recipe": args.recipe, "epochs": args.epochs, "seeds": args.seeds,
        "test_stimuli": base.stimuli, "responsive_vertices": int(mask.sum()),
        "teacher_r_responsive": teacher_r, "ridge_r_responsive": ridge_r,
        "teacher_r_cortex": base.mean(base.r["teacher"]), "ridge_r_cortex": base.mean(base.r["ridge"]),
        "student_r_responsive": [s_mean, s_sd], "student_r_cortex": list(stat("student_r_cortex")),
        "r_student_teacher_responsive": list(stat("r_student_teacher_responsive")),
        "student_over_teacher": s_mean / teacher_r, "target_met": s_mean >= 0.9 * teacher_r,
        "windows_per_s": list(stat("windows_per_s")), "train_wall_s": list(stat("train_wall_s")),
        "ridge_fit_s": ridge_s, "threads": args.threads, "device": args.device, "runs": rows}
    print(f"\nteacher r {teacher_r:.3f}, ridge r {ridge_r:.3f}, student r {s_mean:.3f} ± {s_sd:.3f} "
          f"({s_mean / teacher_r:.2f} x the teacher; target 0.9) on {int(mask.sum())} responsive vertices of the "
          f"test split; r(student, teacher) {summary['r_student_teacher_responsive'][0]:.3f}; "
          f"{summary['windows_per_s'][0]:.1f} ± {summary['windows_per_s'][1]:.1f} windows/s on {args.device}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
