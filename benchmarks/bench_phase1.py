"""Does Phase 1 initialisation help Phase 2? Held-out r on the demo at equal Phase 2 steps.

For each seed: Phase 1 (``phase1`` recipe, tiny-tribe-demo) on the study's training-split stimuli, then
Phase 2 from its best checkpoint (embeddings frozen, as the design asks) and Phase 2 from random init,
with the same Phase 2 settings and steps; both scored on the test split against fMRI on responsive
vertices (as ``bench_phase2.py``). Numbers either way.

Usage: python benchmarks/bench_phase1.py --study DIR [--seeds 0 1 2] [--p1-epochs 10] [--p2-epochs 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_phase2 import responsive_mask
from bench_phase3 import P2_FAST


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--p1-epochs", type=int, default=10)
    ap.add_argument("--p2-epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from tinytribe.data.study import load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.model.checkpoint import load_checkpoint
    from tinytribe.train import phase1, phase2

    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    test = study.split("test")
    mask = responsive_mask(args.study, study.study.space) & study.cortex
    rows = []
    for seed in args.seeds:
        root = Path(tempfile.mkdtemp(prefix=f"bench-phase1-{seed}-"))
        common = [f"loop.seed={seed}", "loop.device=cpu"]
        t0 = time.perf_counter()
        p1 = phase1.setup([args.study], root / "p1", overrides=[*common, f"loop.epochs={args.p1_epochs}"]).train(
            progress=False)
        p1_s = time.perf_counter() - t0
        row = {"seed": seed, "phase1_steps": p1.step, "phase1_s": p1_s, "phase1_val": p1.metrics}
        for name, init in (("from_phase1", p1.best or p1.last), ("from_random", None)):
            t0 = time.perf_counter()
            res = phase2.setup([study], root / name, overrides=[*common, f"loop.epochs={args.p2_epochs}", *P2_FAST],
                               init_from=init).train(progress=False)
            model, ck = load_checkpoint(res.best or res.last)
            ev = E.score(study, test, {"s": E.student_predictions(study, test, model)})
            row[name] = {"r_responsive": ev.mean(ev.r["s"], mask), "steps": res.step, "best_step": ck.step,
                         "train_s": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "phase1_val"}), flush=True)
    summary = {k: [float(np.mean([r[k]["r_responsive"] for r in rows])),
                   float(np.std([r[k]["r_responsive"] for r in rows], ddof=1)) if len(rows) > 1 else 0.0]
               for k in ("from_phase1", "from_random")}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": rows, "seeds": args.seeds}, indent=2))


if __name__ == "__main__":
    main()
