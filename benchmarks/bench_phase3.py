"""Phase 3 quality on the demo: held-out r and r / pooled noise ceiling on responsive vertices.

Settings, each scored on the *test* split (which no training reads) against fMRI:

- ``ridge``: the banded ridge fitted on the training split's fMRI; ``teacher``: the demo teacher;
- ``phase3_scratch``: Phase 3 from random init;
- ``phase2``: Phase 2 alone (distilled from the teacher-only corpus and the scanned stimuli' teacher outputs);
- ``phase2_phase3``: Phase 3 from that Phase 2 checkpoint.

Students are ``tiny-tribe-demo``, one run per seed (mean ± sd over seeds). Target: Phase 2 -> Phase 3 is
best, beats the ridge and reaches >= 0.7 of the ceiling.

Usage: python benchmarks/bench_phase3.py --study DIR [--seeds 0 1 2] [--p2-epochs 40] [--out FILE]
(a study from ``notebooks/00_demo_study`` with ``size=large``, or ``benchmarks/bench_demo.py --size large --out DIR``)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_phase2 import responsive_mask

P2_FAST = ["kd.lr_head=3e-3", "kd.lr_projectors=3e-4", "kd.lr_transformer=3e-4"]   # Phase 2 at 3x the design's lr


def ridge_predictions(study, study_root: Path):
    """The ridge's test predictions, fitted once per study (cached beside it, as bench_phase2 does)."""
    from tinytribe.eval import evaluate as E
    from tinytribe.eval.ridge import RidgeConfig

    cache = study_root / "bench_ridge_test.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return {int(k): (z[k], np.ones(z[k].shape[0], bool)) for k in z.files}
    ridge, _ = E.ridge_predictions(study, study.split("train"), study.split("test"), RidgeConfig(n_iter=20))
    np.savez(cache, **{str(i): p for i, (p, _) in ridge.items()})
    return ridge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--p2-epochs", type=int, default=40)
    ap.add_argument("--p3-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = ap.parse_args()

    import torch

    from tinytribe.data.study import load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.model.checkpoint import load_checkpoint
    from tinytribe.train import phase2, phase3

    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    test = study.split("test")
    fixed = {"teacher": E.teacher_predictions(study, test), "ridge": ridge_predictions(study, args.study)}
    base = E.score(study, test, fixed)
    mask = responsive_mask(args.study, study.study.space) & base.cortex
    ceiling = base.ceiling_mean(mask)

    def summary(ev, name: str) -> dict:
        r = ev.mean(ev.r[name], mask)
        return {"r": r, "r_over_ceiling": r / ceiling}

    scores = {k: summary(base, k) for k in fixed}
    per_seed: dict[str, list[dict]] = {"phase3_scratch": [], "phase2": [], "phase2_phase3": []}

    def run(name: str, fn, seed: int) -> Path:
        t0 = time.perf_counter()
        ck = fn()
        model, c = load_checkpoint(ck)
        ev = E.score(study, test, {name: E.student_predictions(study, test, model, device=args.device)})
        row = {"seed": seed, "steps": c.step, "train_s": time.perf_counter() - t0, **summary(ev, name)}
        per_seed[name].append(row)
        print(json.dumps({"setting": name, **row}), flush=True)
        return ck

    common = [f"loop.device={args.device}"]
    for seed in args.seeds:
        root = Path(tempfile.mkdtemp(prefix=f"bench-phase3-{seed}-"))

        def p2() -> Path:
            r = phase2.setup([study], root / "p2", overrides=[*common, f"loop.seed={seed}",
                                                              f"loop.epochs={args.p2_epochs}", *P2_FAST])
            res = r.train(progress=False)
            return res.best or res.last

        def p3(init: Path | None, where: str):
            def go() -> Path:
                r = phase3.setup([study], root / where, overrides=[*common, f"loop.seed={seed}",
                                                                   f"loop.epochs={args.p3_epochs}"], init_from=init)
                res = r.train(progress=False)
                return res.best or res.last
            return go

        p2_ck = run("phase2", p2, seed)
        run("phase2_phase3", p3(p2_ck, "p2p3"), seed)
        run("phase3_scratch", p3(None, "p3"), seed)

    for name, rows in per_seed.items():
        r = np.array([x["r"] for x in rows])
        scores[name] = {"r": float(r.mean()), "r_sd": float(r.std(ddof=1)) if r.size > 1 else 0.0,
                        "r_over_ceiling": float(r.mean() / ceiling), "runs": rows}
    best = max(per_seed, key=lambda k: scores[k]["r"])
    result = {"study": str(args.study), "seeds": args.seeds, "p2_epochs": args.p2_epochs, "p3_epochs": args.p3_epochs,
              "responsive_vertices": int(mask.sum()), "ceiling_responsive": ceiling, "scores": scores,
              "best_student": best, "target_met": best == "phase2_phase3"
              and scores[best]["r"] > scores["ridge"]["r"] and scores[best]["r_over_ceiling"] >= 0.7,
              "threads": args.threads, "device": args.device}
    print(f"\npooled ceiling {ceiling:.3f} on {int(mask.sum())} responsive vertices of the test split")
    for name, s in scores.items():
        sd = f" ± {s['r_sd']:.3f}" if "r_sd" in s else ""
        print(f"{name:<16} r {s['r']:.3f}{sd}   r / ceiling {s['r_over_ceiling']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
