"""Feature-extraction speed and memory: seconds of compute per second of media, per stage.

Builds a test clip from the bundled media (video with narration, repeated to --seconds), extracts it
with the offline default backbones, and prints each stage's time per second of media and the peak
resident memory. Use --seconds 7200 for the 2-hour memory check (audio and video are streamed).

Usage: python benchmarks/bench_features.py [--seconds 60] [--threads 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(path: Path, seconds: float) -> None:
    """Repeat the bundled astronaut clip (160x120 video at 10 fps, 16 kHz narration) to ``seconds``."""
    import av

    import tinytribe

    src = Path(tinytribe.__file__).parent / "assets" / "media" / "astronaut_tour.mp4"
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
        audio = np.concatenate([r.to_ndarray().reshape(-1) for f in c.decode(audio=0) for r in rs.resample(f)])
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        as_ = out.add_stream("aac", rate=16000)
        as_.layout = "mono"
        n_frames = int(seconds * 10)
        for i in range(n_frames):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        total = int(seconds * 16000)
        for i in range(0, total, 1024):
            idx = (np.arange(i, min(i + 1024, total))) % audio.size
            fr = av.AudioFrame.from_ndarray(audio[None, idx].astype(np.float32), format="flt", layout="mono")
            fr.sample_rate, fr.pts, fr.time_base = 16000, i, Fraction(1, 16000)
            for pkt in as_.encode(fr):
                out.mux(pkt)
        for pkt in as_.encode():
            out.mux(pkt)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from tinytribe.features.extract import ExtractionConfig, FeatureExtractor

    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        t = time.perf_counter()
        make_clip(clip, args.seconds)
        print(f"built a {args.seconds:g} s test clip in {time.perf_counter() - t:.1f} s")
        ex = FeatureExtractor(ExtractionConfig(device=args.device))
        for m in ("text", "audio", "video"):
            ex.backbone(m)  # load outside the timing
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        fc = ex.extract(clip)
        total = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {dev}; {fc.n_steps} steps of features")
    for stage, secs in sorted(ex.timings.items()):
        print(f"  {stage:<16} {secs / args.seconds:.4f} s per s of media")
    print(f"  {'end to end':<16} {total / args.seconds:.4f} s per s of media ({total:.1f} s)")
    print(f"peak RSS {rss:.0f} MiB (after loading the backbones: {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()
