"""Student speed and memory on this machine.

1. Inference: 150 s of stimulus (300 feature steps, 900 tokens) -> 100 TRs (1.49 s) on fsaverage5,
   batch 1 (target: <= 0.15 s, i.e. >= 1000x faster than real time, on 2 CPU cores).
2. Training: one optimiser step on a batch of 8 windows of 50 TRs (75 s + 8 s lead-in = 166 steps),
   fsaverage4, for each named config.

Usage: python benchmarks/bench_model.py [--threads 2] [--device cpu|cuda] [--repeat 10]
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from tinytribe.formats import MODALITIES
from tinytribe.model import TimeGrid, create_model


def batch(cfg, B: int, T: int, device: str):
    feats = {m: torch.randn(B, T, d, device=device) for m, d in zip(MODALITIES, cfg.input_dims)}
    return feats, torch.ones(B, 3, dtype=torch.bool, device=device), torch.zeros(B, device=device)


def timed(fn, repeat: int, device: str) -> list[float]:
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="inference weights and activations (bfloat16: model.to(torch.bfloat16))")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{platform.processor() or platform.machine()}, {args.threads} threads"
    print(f"device: {dev} ({name}); torch {torch.__version__}")

    model = create_model("tiny-tribe-v3", ["space=fsaverage5", "input_dims=[386,384,1280]"])
    model = model.to(device=dev, dtype=getattr(torch, args.dtype)).eval()
    feats, avail, t0 = batch(model.config, 1, 300, dev)
    grid = {"fmri": TimeGrid.regular(torch.zeros(1, device=dev), 100, 1.49)}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        timed(lambda: model(feats, avail, t0, grid), 3, dev)  # warm-up
        t = timed(lambda: model(feats, avail, t0, grid), args.repeat, dev)
    med = statistics.median(t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"inference tiny-tribe-v3 ({args.dtype}), 150 s -> 100 TRs on fsaverage5, batch 1: "
          f"median {med * 1000:.0f} ms (min {min(t) * 1000:.0f}), {med / 150:.5f} s per s of stimulus "
          f"= {150 / med:.0f}x real time; peak memory {peak:.0f} MiB (process RSS grew "
          f"{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.0f} MiB)")

    for cfg_name in ("tiny-tribe-demo", "tiny-tribe-v3"):
        m = create_model(cfg_name, ["input_dims=[386,384,1280]"]).to(dev).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        feats, avail, t0 = batch(m.config, 8, 166, dev)
        g = {"fmri": TimeGrid.regular(torch.full((8,), 8.0, device=dev), 50, 1.49, batch=8)}
        target = torch.randn(8, 50, m.config.n_outputs, device=dev)

        def step():
            opt.zero_grad(set_to_none=True)
            out = m(feats, avail, t0, g, torch.zeros(8, dtype=torch.long, device=dev), p_modality_dropout=0.3)
            (torch.nn.functional.mse_loss(out.responses["fmri"], target) + 0.01 * out.aux_loss).backward()
            opt.step()

        timed(step, 2, dev)
        t = timed(step, max(3, args.repeat // 2), dev)
        n = sum(p.numel() for p in m.parameters())
        print(f"training step {cfg_name} ({n / 1e6:.1f}M params), batch 8 x 50 TRs, fsaverage4: "
              f"median {statistics.median(t) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
