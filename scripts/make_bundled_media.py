"""Rebuild the small media files bundled in ``tinytribe/assets/media`` (run once; outputs committed).

Needs scikit-image (real photos), espeak-ng (speech) and PyAV. Deterministic apart from encoder
versions. Usage: ``python scripts/make_bundled_media.py``.
"""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tinytribe" / "assets" / "media"
SR = 16_000
FPS = 10
W, H = 160, 120
# Aesop, "The North Wind and the Sun" (public domain).
STORY = ("The North Wind and the Sun were disputing which was the stronger, when a traveler came along "
         "wrapped in a warm cloak. They agreed that the one who first succeeded in making the traveler "
         "take his cloak off should be considered stronger than the other.")


def speak(text: str, wpm: int = 150) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-s", str(wpm), "-w", str(wav), text], check=True)
        with av.open(str(wav)) as c:
            rs = av.AudioResampler(format="flt", layout="mono", rate=SR)
            parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
    return np.concatenate(parts).astype(np.float32)


def crop_path(img: np.ndarray, n: int, zoom: tuple[float, float], centre0, centre1) -> list[np.ndarray]:
    """Frames of a camera moving (pan + zoom) over a photo."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    frames = []
    for i in range(n):
        a = i / max(n - 1, 1)
        z = zoom[0] + a * (zoom[1] - zoom[0])
        cy = (centre0[0] + a * (centre1[0] - centre0[0])) * h
        cx = (centre0[1] + a * (centre1[1] - centre0[1])) * w
        ch, cw = h / z, h / z * W / H
        y0 = int(np.clip(cy - ch / 2, 0, h - ch))
        x0 = int(np.clip(cx - cw / 2, 0, w - cw))
        crop = img[y0:y0 + int(ch), x0:x0 + int(cw)]
        frames.append((resize(crop, (H, W), anti_aliasing=True) * 255).astype(np.uint8))
    return frames


def write(path: Path, frames: list[np.ndarray] | None, audio: np.ndarray | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = as_ = None
        if frames is not None:
            vs = c.add_stream("libx264", rate=FPS)
            vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
            vs.options = {"crf": "30", "preset": "veryslow"}
        if audio is not None:
            as_ = c.add_stream("aac" if frames is not None else "libmp3lame", rate=SR)
            as_.layout = "mono"
            as_.bit_rate = 32_000
        if frames is not None:
            for f in frames:
                for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(pkt)
            for pkt in vs.encode():
                c.mux(pkt)
        if audio is not None:
            n = 1024
            for i in range(0, len(audio), n):
                fr = av.AudioFrame.from_ndarray(audio[None, i:i + n].astype(np.float32), format="flt", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = SR, i, Fraction(1, SR)
                for pkt in as_.encode(fr):
                    c.mux(pkt)
            for pkt in as_.encode():
                c.mux(pkt)


def main() -> None:
    from skimage import data

    rng = np.random.default_rng(0)
    # 1. astronaut_tour.mp4 -- 24 s: a slow pan over the astronaut, a cut to the cat at 12 s, narration
    #    over the first 14 s, a tone and a noise burst after it.
    frames = crop_path(data.astronaut(), 12 * FPS, (1.0, 2.2), (0.5, 0.5), (0.3, 0.45))
    frames += crop_path(data.chelsea(), 12 * FPS, (1.4, 1.4), (0.5, 0.3), (0.5, 0.7))
    audio = np.zeros(24 * SR, np.float32)
    speech = speak(STORY)[: 14 * SR]
    audio[: speech.size] = 0.8 * speech
    t = np.arange(2 * SR) / SR
    audio[16 * SR:18 * SR] = 0.2 * np.sin(2 * np.pi * 440 * t)
    audio[20 * SR:21 * SR] = 0.1 * rng.standard_normal(SR)
    write(OUT / "astronaut_tour.mp4", frames, audio)
    # 2. coffee_still.mp4 -- 12 s, silent: a still stretch, then a zoom into the cup.
    frames = crop_path(data.coffee(), 6 * FPS, (1.0, 1.0), (0.5, 0.5), (0.5, 0.5))
    frames += crop_path(data.coffee(), 6 * FPS, (1.0, 2.5), (0.5, 0.5), (0.45, 0.4))
    write(OUT / "coffee_still.mp4", frames, None)
    # 3. north_wind_story.mp3 -- an audio-only story, all speech.
    write(OUT / "north_wind_story.mp3", None, 0.8 * speak(STORY, wpm=140))
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
