"""End-to-end prediction speed on a realistic clip: seconds of compute per second of video, per stage.

Makes its own clip with PyAV (which bundles FFmpeg): --seconds of 1280x720 H.264 at 30 fps (a real
photo from scikit-image, panned) with stereo 44.1 kHz AAC speech (espeak-ng reading a fable, looped).
A first run (``tinytribe.predict.predict``, features extracted into an empty cache, the backbones
loaded) and a second in a new process, as a user's second run is (checkpoint load, cache check and
load, student; writing the outputs timed apart), each stage timed. The process is pinned to --threads
cores. The student is ``--model`` at random init (speed does not depend on the weights) unless
--checkpoint is given.

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


def cached_run(clip: Path, cache: Path, ck_path: Path, out: Path, device: str) -> dict:
    """A second run as a user makes it: a new process, features in the cache. Each stage timed."""
    t = {}
    t0 = time.perf_counter()
    from tinytribe.formats import Checkpoint
    from tinytribe.model.checkpoint import model_from_checkpoint
    from tinytribe.predict import (check_features, cached_features, extractor_for, predict, predict_features,
                                   save_prediction)

    t["import"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ck = Checkpoint.load(ck_path)
    model = model_from_checkpoint(ck, ck_path)
    t["checkpoint load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    extractor = extractor_for(ck, device=device)
    fc = cached_features(clip, cache, extractor)            # hashes the clip, checks and loads the cache
    t["cache check + load"] = time.perf_counter() - t0
    assert not extractor.timings, f"the cached run extracted features: {extractor.timings}"
    t0 = time.perf_counter()
    used = check_features(fc, model.config, ck.train_config.get("data", {}), str(clip))
    predict_features(model, fc, tr_s=1.49, modalities=used, device=device)
    t["student"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict(ck, clip, cache_dir=cache, extractor=extractor, model=model, device=device)
    t["predict() again, same process"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    save_prediction(pred, out)
    t["write npy + h5 + GIFTI"] = time.perf_counter() - t0
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="tiny-tribe-v3")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cached-run", nargs=4, type=Path, metavar=("CLIP", "CACHE", "CHECKPOINT", "OUT"),
                    help=argparse.SUPPRESS)   # the second run, in its own process
    args = ap.parse_args()

    import os

    import torch

    if hasattr(os, "sched_setaffinity"):   # at most --threads cores for every library (FFmpeg, CTranslate2 too)
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    torch.set_num_threads(args.threads)
    if args.cached_run:
        print(json.dumps(cached_run(*args.cached_run, device=args.device)))
        return

    from tinytribe.model import create_model
    from tinytribe.model.checkpoint import save_checkpoint
    from tinytribe.predict import predict

    root = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    clip = root / "clip.mp4"
    t0 = time.perf_counter()
    make_clip(clip, args.seconds)
    print(f"made {clip} ({clip.stat().st_size / 1e6:.1f} MB, 1280x720 H.264 30 fps + stereo 44.1 kHz AAC speech) "
          f"in {time.perf_counter() - t0:.0f} s")
    # the offline video backbone is EfficientNet-Lite0 (1280 values per step; v3's MobileViT-S has 640)
    ck_path = args.checkpoint or save_checkpoint(create_model(args.model, ["input_dims=[386, 384, 1280]"]),
                                                 root / "student.pt", phase="fmri")
    from tinytribe.formats import Checkpoint
    from tinytribe.predict import extractor_for

    extractor = extractor_for(Checkpoint.load(ck_path), device=args.device)
    t0 = time.perf_counter()
    pred = predict(ck_path, clip, cache_dir=root / "features", extractor=extractor, device=args.device)
    first = time.perf_counter() - t0
    stages = dict(extractor.timings)
    other = first - sum(stages.values())
    print(f"first run: {first:.2f} s = {first / args.seconds:.4f} s per second of video (target <= 0.25); "
          + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()) + f", the rest (loading the backbones and the "
          f"checkpoint, hashing, the student, writing the cache) {other:.2f} s")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--device", args.device,
                          "--cached-run", str(clip), str(root / "features"), str(ck_path), str(root / "out")],
                         capture_output=True, text=True, check=True)
    cached = json.loads(out.stdout.strip().splitlines()[-1])
    total = sum(v for k, v in cached.items() if k not in ("import", "predict() again, same process",
                                                           "write npy + h5 + GIFTI"))
    print(f"second run (new process, features cached): {total:.2f} s = {total / args.seconds:.4f} s/s (target "
          f"<= 0.005) for checkpoint load + cache check + student; "
          + ", ".join(f"{k} {v:.3f} s" for k, v in cached.items()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"seconds": args.seconds, "threads": args.threads, "device": args.device, "model": args.model,
               "n_trs": int(pred.responses.shape[0]), "windows": len(pred.windows),
               "first_s": first, "first_s_per_s": first / args.seconds, "first_stages_s": stages,
               "cached_s": total, "cached_s_per_s": total / args.seconds, "cached_stages_s": cached,
               "peak_rss_mb_first_run": peak}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
