"""New subjects, new output spaces and student pseudo-labels on the demo (``tinytribe.adapt``, design 5c).

1. **A new subject**: Phase 3 from a Phase 2 checkpoint with one subject left out; that subject's FiLM
   vectors are then fitted on 1, 2, 5 minutes and all of its training runs; its test-split r (mean over
   cortex, and over responsive vertices) beside the average subject's, and the seconds each fit took.
2. **A new output space**: the study's runs as ROI means (``custom:N``, the named ROIs of
   ``tinytribe.eval.rois``); the Phase 3 model's fusion kept and a fresh head fitted (head only, then
   everything at 0.1x), against a same-size model trained from scratch on the ROI study alone for as
   many epochs; test-split r.
3. **Pseudo-labels**: half the teacher-only corpus withheld from the real teacher; Phase 2 trained on the
   rest; that student pseudo-labels the withheld half; Phase 3 from it with and without them; test r.

Usage: python benchmarks/bench_adapt.py --study DIR [--phase2 CKPT] [--out FILE] [--parts subject space pseudo]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path


from bench_phase2 import responsive_mask
from bench_phase3 import P2_FAST


def withhold(study, stimuli: set[str]):
    """The study with ``stimuli`` out of every split and without teacher outputs (never seen)."""
    splits = {k: [p for p in v if (p if isinstance(p, str) else p.stimulus) not in stimuli]
              for k, v in study.study.splits.items()}
    return dataclasses.replace(study, study=dataclasses.replace(study.study, splits=splits),
                               stimuli={k: (dataclasses.replace(s, teacher=None) if k in stimuli else s)
                                        for k, s in study.stimuli.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--phase2", type=Path, help="a Phase 2 checkpoint on this study (default: train one)")
    ap.add_argument("--p2-epochs", type=int, default=40)
    ap.add_argument("--p3-epochs", type=int, default=10)
    ap.add_argument("--subject", default=None, help="the held-out subject (default: the study's last)")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--parts", nargs="+", default=["subject", "space", "pseudo"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from tinytribe import adapt
    from tinytribe.data.study import load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.eval.rois import named_rois
    from tinytribe.model.checkpoint import load_checkpoint
    from tinytribe.train import phase2, phase3
    from tinytribe.train.pseudo import pseudo_label

    torch.set_num_threads(args.threads)
    study = load_study(args.study)
    test = study.split("test")
    mask = responsive_mask(args.study, study.study.space) & study.cortex
    root = Path(tempfile.mkdtemp(prefix="bench-adapt-"))
    seed = [f"loop.seed={args.seed}", "loop.device=cpu"]
    out: dict = {"study": str(args.study), "seed": args.seed, "threads": args.threads}

    def train_p2(st, where: str) -> Path:
        res = phase2.setup([st], root / where, overrides=[*seed, f"loop.epochs={args.p2_epochs}", *P2_FAST]).train(
            progress=False)
        return res.best or res.last

    def train_p3(st, where: str, init: Path | None, extra: list[str] = ()) -> Path:
        res = phase3.setup([st], root / where, overrides=[*seed, f"loop.epochs={args.p3_epochs}", *extra],
                           init_from=init).train(progress=False)
        return res.best or res.last

    def test_r(st, model, runs=None, m=None) -> tuple[float, float]:
        sel = runs if runs is not None else st.split("test")
        ev = E.score(st, sel, {"s": E.student_predictions(st, sel, model)})
        return ev.mean(ev.r["s"]), ev.mean(ev.r["s"], m) if m is not None else float("nan")

    p2 = args.phase2 or train_p2(study, "p2")
    if "subject" in args.parts:
        subject = args.subject or study.subjects[-1]
        t0 = time.perf_counter()
        p3 = train_p3(study, "p3-heldout", p2, [f'fmri.exclude_subjects=["{subject}"]'])
        base, _ = load_checkpoint(p3)
        mine = test.subset([i for i in test.runs if study.runs[i].subject == subject])
        avg = (*test_r(study, base, mine, mask), adapt.heldout_mse(study, mine, E.student_predictions(study, mine, base)))
        rows = []
        for minutes in [*args.minutes, None]:
            model, rep = adapt.adapt_subject(base, study, subject, minutes=minutes)
            r = test_r(study, model, mine, mask)
            mse = adapt.heldout_mse(study, mine, E.student_predictions(study, mine, model))
            rows.append({"minutes": rep.minutes, "n_trs": rep.n_trs, "r_cortex": r[0], "r_responsive": r[1],
                         "mse_cortex": mse, "seconds": rep.seconds})
            print(json.dumps({"part": "subject", **rows[-1]}), flush=True)
        out["subject"] = {"subject": subject, "phase3_s": time.perf_counter() - t0, "average_r_cortex": avg[0],
                          "average_r_responsive": avg[1], "average_mse_cortex": avg[2], "curve": rows,
                          "film_numbers": 2 * base.config.d_model}
        print(json.dumps({"part": "subject", "average": avg}), flush=True)
    if "space" in args.parts:
        p3 = root / "p3-heldout" / "checkpoints" / "best.pt"
        p3 = p3 if p3.is_file() else train_p3(study, "p3", p2)
        rois = named_rois(study.study.space)
        roi_root = adapt.roi_study(args.study, root / "roi_study", rois)
        roi = load_study(roi_root)
        t0 = time.perf_counter()
        moved = adapt.new_space(p3, roi, root / "roi-transfer", head_epochs=args.p3_epochs // 2,
                                finetune_epochs=args.p3_epochs - args.p3_epochs // 2, overrides=seed)
        transfer_s = time.perf_counter() - t0
        head_only, _ = load_checkpoint(moved["head"].best or moved["head"].last)
        final, _ = load_checkpoint(moved["checkpoint"])
        t0 = time.perf_counter()
        scratch = phase3.setup([roi], root / "roi-scratch", model=root / "roi-transfer" /
                               f"model-{roi.study.space.replace(':', '-')}.json",
                               overrides=[*seed, f"loop.epochs={args.p3_epochs}"]).train(progress=False)
        scratch_model, _ = load_checkpoint(scratch.best or scratch.last)
        out["space"] = {"space": roi.study.space, "rois": list(rois), "epochs": args.p3_epochs,
                        "transfer_head_only_r": test_r(roi, head_only)[0], "transfer_r": test_r(roi, final)[0],
                        "scratch_r": test_r(roi, scratch_model)[0], "transfer_s": transfer_s,
                        "scratch_s": time.perf_counter() - t0}
        print(json.dumps({"part": "space", **out["space"]}), flush=True)
    if "pseudo" in args.parts:
        corpus = sorted(s for s in study.stimuli if s.startswith("corpus"))
        held = set(corpus[::2])
        p2_part = train_p2(withhold(study, held), "p2-withheld")
        media = [args.study / study.study.stimuli[s].media for s in sorted(held)]
        t0 = time.perf_counter()
        man = pseudo_label(p2_part, media, args.study / "features", root / "pseudo", media_root=args.study,
                           progress=False)
        label_s = time.perf_counter() - t0
        student_score = load_checkpoint(p2_part)[1].metrics.get("score")
        with_pl = train_p3(study, "p3-pseudo", p2_part, [f'fmri.pseudo_labels=["{man}"]', "fmri.pseudo_replace=true",
                                                          "fmri.pseudo_min_score=0.0"])
        without = train_p3(withhold(study, held), "p3-nopseudo", p2_part)
        r_with = test_r(study, load_checkpoint(with_pl)[0], m=mask)
        r_without = test_r(study, load_checkpoint(without)[0], m=mask)
        p2_r = test_r(study, load_checkpoint(p2_part)[0], m=mask)
        out["pseudo"] = {"withheld": sorted(held), "student_val_score": student_score, "label_s": label_s,
                         "phase2_r_responsive": p2_r[1], "with_r_responsive": r_with[1],
                         "without_r_responsive": r_without[1], "with_r_cortex": r_with[0],
                         "without_r_cortex": r_without[0]}
        print(json.dumps({"part": "pseudo", **out["pseudo"]}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
