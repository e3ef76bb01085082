"""End-to-end prediction speed on a realistic clip: seconds of compute per second of video, per stage.

Makes its own clip with PyAV (which bundles FFmpeg): --seconds of 1280x720 H.264 at 30 fps (a real
photo from scikit-image, panned and zoomed) with stereo 44.1 kHz AAC speech (espeak-ng reading a
fable, looped). Then ``tinytribe.predict.predict`` twice in one process: a first run (features
extracted into an empty cache) and a second (features from the cache), each stage timed. The student
is ``--model`` at random init (speed does not depend on the weights) unless --checkpoint is given.

Targets (issue 19): <= 0.25 s per second of video first run, <= 0.005 s/s from the cache, on 2 CPU cores.

Usage: python benchmarks/bench_predict.py [--seconds 60] [--threads 2] [--model tiny-tribe-v3] [--checkpoint F]
       [--device cpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

FABLE = ("The North Wind and the Sun were disputing which was the stronger, when a traveler came along wrapped "
         "in a warm cloak. They agreed that the one who first succeeded in making the traveler take his cloak off "
         "should be considered stronger than the other. Then the North Wind blew as hard as he could, but the "
         "more he blew the more closely did the traveler fold his cloak around him.")


def speech(seconds: float, rate: int = 44_100) -> np.ndarray:
    """(2, n) float32 stereo speech: espeak-ng reading the fable, looped to ``seconds``."""
    from scipy.signal import resample_poly
    from scipy.io import wavfile

    if shutil.which("espeak-ng") is None:
        raise SystemExit("bench_predict needs espeak-ng (apt install espeak-ng) for its speech track")
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150", FABLE], check=True)
        sr, x = wavfile.read(wav)
    x = x.astype(np.float32) / 32768.0
    x = resample_poly(x, rate, sr).astype(np.float32)
    x = np.tile(x, int(np.ceil(seconds * rate / x.size)))[: int(seconds * rate)]
    return np.stack([x, 0.8 * x])


def make_clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (1280, 720)) -> None:
    import av
    from skimage import data, transform

    w, h = size
    photo = (transform.resize(data.astronaut(), (h * 3 // 2, w * 3 // 2), anti_aliasing=True) * 255).astype(np.uint8)
    audio = speech(seconds)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "23"}
        aus = out.add_stream("aac", rate=44_100)
        aus.layout = "stereo"
        n = int(seconds * fps)
        H, W = photo.shape[:2]
        for i in range(n):   # a slow pan across the photo
            x0 = int((W - w) * (0.5 + 0.5 * np.sin(2 * np.pi * i / n)))
            y0 = int((H - h) * i / max(n - 1, 1))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(photo[y0:y0 + h, x0:x0 + w]), format="rgb24")
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        step = 1024
        for i in range(0, audio.shape[1], step):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, i:i + step]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = 44_100, i, Fraction(1, 44_100)
            for pkt in aus.encode(fr):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tiny-tribe-v3")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch

    from tinytribe.features.extract import ExtractionConfig, FeatureExtractor
    from tinytribe.formats import Checkpoint
    from tinytribe.model import create_model
    from tinytribe.model.checkpoint import model_from_checkpoint, save_checkpoint
    from tinytribe.predict import predict

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    clip = root / "clip.mp4"
    t0 = time.perf_counter()
    make_clip(clip, args.seconds)
    print(f"made {clip} ({clip.stat().st_size / 1e6:.1f} MB, 1280x720 H.264 30 fps + stereo 44.1 kHz AAC speech) "
          f"in {time.perf_counter() - t0:.0f} s")
    # the offline video backbone is EfficientNet-Lite0 (1280 values per step; v3's MobileViT-S has 640)
    ck_path = args.checkpoint or save_checkpoint(create_model(args.model, ["input_dims=[386, 384, 1280]"]),
                                                 root / "student.pt", phase="fmri")
    ck = Checkpoint.load(ck_path)
    t0 = time.perf_counter()
    model = model_from_checkpoint(ck, ck_path)
    load_s = time.perf_counter() - t0
    extractor = FeatureExtractor(ExtractionConfig(device=args.device))
    rows = {}
    for run in ("first", "cached"):
        extractor.timings.clear()
        t0 = time.perf_counter()
        pred = predict(ck_path, clip, cache_dir=root / "features", extractor=extractor, device=args.device,
                       model=model)
        total = time.perf_counter() - t0
        stages = {k: v for k, v in extractor.timings.items()}
        rows[run] = {"total_s": total, "s_per_s": total / args.seconds, "stages_s": stages,
                     "n_trs": int(pred.responses.shape[0]), "windows": len(pred.windows)}
        print(f"{run} run: {total:.2f} s = {total / args.seconds:.4f} s per second of video; "
              + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    # the student alone, from the cached features (what the cached run spends beyond loading files)
    from tinytribe.formats import FeatureCache
    from tinytribe.predict import predict_features

    fc = FeatureCache.load(root / "features" / "clip.npz")
    t0 = time.perf_counter()
    predict_features(model, fc, tr_s=pred.tr_s, device=args.device)
    student_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"seconds": args.seconds, "threads": args.threads, "device": args.device, "model": model.config.name,
               "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "model_load_s": load_s,
               "student_s": student_s, "student_s_per_s": student_s / args.seconds, "peak_rss_mb": peak, **rows}
    print(f"student alone: {student_s:.3f} s ({student_s / args.seconds:.4f} s/s, {summary['params_m']:.1f}M "
          f"parameters); model load {load_s:.2f} s; peak RSS {peak:.0f} MB")
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
