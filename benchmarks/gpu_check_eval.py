"""CUDA check for this session's code: the student evaluated on the GPU, the ridge on himalaya's
torch_cuda backend, and the TRIBE v2 worker's hooks on CUDA tensors -- each against the CPU.

Usage (on a GPU machine, with a demo study built by notebooks/00_demo_study or benchmarks/bench_demo.py):
    python benchmarks/gpu_check_eval.py --study runs/demo_study
Parts whose packages are missing are reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--device", default="cuda", help="cpu: rehearse the script without a GPU")
    args = ap.parse_args()
    dev = args.device
    import torch

    from tinytribe.data.study import load_study
    from tinytribe.eval import evaluate as E
    from tinytribe.eval.speed import measure
    from tinytribe.model import create_model

    if dev == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    study = load_study(args.study)
    runs = study.split("test")
    failures = 0

    torch.manual_seed(0)
    model = create_model("tiny-tribe-demo").eval()
    cpu = E.student_predictions(study, runs, model, device="cpu")
    t = time.perf_counter()
    gpu = E.student_predictions(study, runs, model, device=dev)
    t = time.perf_counter() - t
    diff = max(np.abs(cpu[i][0] - gpu[i][0]).max() / (np.abs(cpu[i][0]).max() + 1e-12) for i in runs)
    print(f"student on {len(runs)} test runs: {dev} {t:.2f} s, max relative difference to CPU {diff:.2e}")
    failures += diff > 1e-4
    for name in ("tiny-tribe-demo", "tiny-tribe-v3"):
        print(f"{name}: " + measure(create_model(name), device=dev).line())

    try:
        import himalaya  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        print(f"ridge: skipped ({e})")
    else:
        from tinytribe.eval.ridge import RidgeConfig, fit_predict

        tr_sel = study.split("train")
        train = tr_sel.subset(i for i in tr_sel if study.runs[i].subject == "sub-01")
        test = runs.subset(i for i in runs if study.runs[i].subject == "sub-01")
        out = {}
        accel = "torch_cuda" if dev == "cuda" else "torch"
        for backend in ("numpy", accel):
            t = time.perf_counter()
            out[backend] = fit_predict(study, train, test, RidgeConfig(n_iter=10, backend=backend))
            print(f"ridge, backend {backend}: {time.perf_counter() - t:.2f} s", flush=True)
        d = max(np.abs(out["numpy"].predictions[i] - out[accel].predictions[i]).max() for i in test)
        scale = max(np.abs(out["numpy"].predictions[i]).max() for i in test)
        print(f"ridge {accel} vs numpy: max |difference| {d:.2e} (predictions up to {scale:.2f})")
        failures += d > 1e-2 * scale

    try:
        import pandas  # noqa: F401
        import x_transformers  # noqa: F401
    except ImportError as e:
        print(f"teacher worker hooks: skipped ({e})")
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "teacher"))
        import fake_tribe

        from tinytribe.teacher import tribev2_worker as w

        m = fake_tribe.load(n_outputs=64, duration_trs=10)
        media = Path(__file__).resolve().parent.parent / "tinytribe" / "assets" / "media" / "astronaut_tour.mp4"
        events = fake_tribe.events_for(str(media), 24.0)  # the bundled clip's length; PyAV may be absent here
        ref = w.predict_window(m, events, 0.0, 24.0)
        m._model.to(dev)
        orig = fake_tribe.Batch.to
        fake_tribe.Batch.to = lambda self, device: fake_tribe.Batch(self.segments, {k: v.to(device) for k, v in
                                                                                  self.data.items()})
        fwd = fake_tribe.FusionModel.forward
        fake_tribe.FusionModel.forward = lambda self, batch: fwd(self, batch.to(dev)).cpu()
        try:
            got = w.predict_window(m, events, 0.0, 24.0)
        finally:
            fake_tribe.Batch.to, fake_tribe.FusionModel.forward = orig, fwd
        d = max(np.abs(got[k] - ref[k]).max() for k in ("predictions", "act__fusion_l4", "act__fusion_l6"))
        print(f"teacher worker on {dev}: hooks recorded {got['act__fusion_l4'].shape}, max |difference| to CPU {d:.2e}")
        failures += d > 1e-3
    print("OK" if not failures else f"{failures} check(s) FAILED")
    return int(bool(failures))


if __name__ == "__main__":
    sys.exit(main())
