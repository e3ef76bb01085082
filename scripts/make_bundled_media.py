"""Rebuild the small media files bundled in ``tinytribe/assets/media`` (run once; outputs committed).

Needs scikit-image (real photos), espeak-ng (speech) and PyAV. Deterministic apart from encoder
versions. Usage: ``python scripts/make_bundled_media.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe.data.demo.stimuli import SR, crop_path, photo, speak, write_media

OUT = Path(__file__).resolve().parent.parent / "tinytribe" / "assets" / "media"
FPS = 10
# Aesop, "The North Wind and the Sun" (public domain), the opening as narrated in the bundled files.
STORY = ("The North Wind and the Sun were disputing which was the stronger, when a traveler came along "
         "wrapped in a warm cloak. They agreed that the one who first succeeded in making the traveler "
         "take his cloak off should be considered stronger than the other.")


def write(path: Path, frames, audio) -> None:
    write_media(path, frames, audio, crf=30, preset="veryslow")


def main() -> None:
    rng = np.random.default_rng(0)
    # 1. astronaut_tour.mp4 -- 24 s: a slow pan over the astronaut, a cut to the cat at 12 s, narration
    #    over the first 14 s, a tone and a noise burst after it.
    frames = crop_path(photo("astronaut"), 12 * FPS, (1.0, 2.2), (0.5, 0.5), (0.3, 0.45))
    frames += crop_path(photo("chelsea"), 12 * FPS, (1.4, 1.4), (0.5, 0.3), (0.5, 0.7))
    audio = np.zeros(24 * SR, np.float32)
    speech = speak(STORY)[: 14 * SR]
    audio[: speech.size] = 0.8 * speech
    t = np.arange(2 * SR) / SR
    audio[16 * SR:18 * SR] = 0.2 * np.sin(2 * np.pi * 440 * t)
    audio[20 * SR:21 * SR] = 0.1 * rng.standard_normal(SR)
    write(OUT / "astronaut_tour.mp4", frames, audio)
    # 2. coffee_still.mp4 -- 12 s, silent: a still stretch, then a zoom into the cup.
    frames = crop_path(photo("coffee"), 6 * FPS, (1.0, 1.0), (0.5, 0.5), (0.5, 0.5))
    frames += crop_path(photo("coffee"), 6 * FPS, (1.0, 2.5), (0.5, 0.5), (0.45, 0.4))
    write(OUT / "coffee_still.mp4", frames, None)
    # 3. north_wind_story.mp3 -- an audio-only story, all speech.
    write(OUT / "north_wind_story.mp3", None, 0.8 * speak(STORY, wpm=140))
    for p in sorted(OUT.iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
