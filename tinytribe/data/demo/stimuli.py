"""Demo stimuli from real material on this machine: photos from scikit-image, speech from espeak-ng.

Each stimulus is a sequence of *shots* (a photo still, panned or zoomed, with cuts between shots)
and a soundtrack of narration (public-domain Aesop fables), tones, noise bursts and silence. Some
stimuli are audio-only stories, some silent clips, so that modality masks and dropout are exercised.
Everything is deterministic from a seed (up to encoder versions).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

SR = 16_000
CORPUS = "corpus"  # the ids of the teacher-only corpus's stimuli start with this
FPS = 10
WIDTH, HEIGHT = 160, 120
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "horse", "stereo_motorcycle", "hubble_deep_field", "camera",
          "coins")

# Aesop's fables, retold (public domain).
FABLES = {
    "north_wind": "The North Wind and the Sun were disputing which was the stronger, when a traveler came along "
                  "wrapped in a warm cloak. They agreed that the one who first made the traveler take his cloak "
                  "off should be considered stronger. The wind blew hard, but the traveler held his cloak tighter. "
                  "Then the Sun shone warmly, and the traveler took his cloak off at once.",
    "tortoise": "A hare laughed at the short feet and slow pace of a tortoise. The tortoise replied that he would "
                "beat the hare in a race. The hare ran far ahead and lay down to sleep by the road. The tortoise "
                "walked on slowly and steadily, and when the hare woke up, the tortoise had already won.",
    "lion_mouse": "A lion was asleep when a little mouse ran over his face. The lion caught the mouse and was about "
                  "to eat it, but the mouse begged to be let go and promised to help one day. Later the lion was "
                  "caught in a hunter's net, and the little mouse gnawed the ropes until the lion was free.",
    "fox_grapes": "A hungry fox saw some fine bunches of grapes hanging from a vine high on a wall. He jumped and "
                  "jumped but could not reach them. At last he turned away and said that the grapes were sour "
                  "anyway, and that he did not want them at all.",
    "crow_pitcher": "A thirsty crow found a pitcher with a little water at the bottom. She could not reach it with "
                    "her beak. So she dropped pebbles into the pitcher one by one, until the water rose to the top "
                    "and she could drink.",
}


# More fables, for the teacher-only corpus only (never the narration of a test clip), each told at
# length so that a corpus clip is mostly speech.
CORPUS_FABLES = {
    "ant_grasshopper": "In a field one summer day a grasshopper was hopping about, chirping and singing to its "
                       "heart's content. An ant passed by, bearing along with great toil an ear of corn he was "
                       "taking to the nest. Why not come and chat with me, said the grasshopper, instead of "
                       "toiling in that way? I am helping to lay up food for the winter, said the ant, and I "
                       "recommend you to do the same. Why bother about winter, said the grasshopper, we have got "
                       "plenty of food at present. But the ant went on its way and continued its toil. When the "
                       "winter came the grasshopper had no food and found itself dying of hunger, while it saw "
                       "the ants handing out corn and grain every day from the stores they had collected in the "
                       "summer. Then the grasshopper knew that it is best to prepare for the days of necessity.",
    "boy_wolf": "There was once a young shepherd boy who tended his sheep at the foot of a mountain near a dark "
                "forest. It was rather lonely for him all day, so he thought upon a plan by which he could get a "
                "little company and some excitement. He rushed down towards the village calling out wolf, wolf, "
                "and the villagers came out to meet him, and some of them stopped with him for a considerable "
                "time. This pleased the boy so much that a few days afterwards he tried the same trick, and again "
                "the villagers came to his help. But shortly after this a wolf actually did come out from the "
                "forest and began to worry the sheep, and the boy of course cried out wolf, wolf, still louder "
                "than before. But this time the villagers, who had been fooled twice before, thought the boy was "
                "again deceiving them, and nobody stirred to come to his help.",
    "town_country": "Now you must know that a town mouse once upon a time went on a visit to his cousin in the "
                    "country. He was rough and ready, this cousin, but he loved his town friend and made him "
                    "heartily welcome. Beans and bacon, cheese and bread, were all he had to offer, but he "
                    "offered them freely. The town mouse rather turned up his long nose at this country fare, "
                    "and said: I cannot understand, cousin, how you can put up with such poor food as this, but "
                    "of course you cannot expect anything better in the country. Come you with me and I will show "
                    "you how to live. No sooner said than done: the two mice set off for the town and arrived at "
                    "the town mouse's residence late at night, where they found the remains of a fine feast. "
                    "Suddenly they heard growling and barking, and the country mouse ran home to his beans.",
    "dog_shadow": "It happened that a dog had got a piece of meat and was carrying it home in his mouth to eat "
                  "it in peace. Now on his way home he had to cross a plank lying across a running brook. As he "
                  "crossed, he looked down and saw his own shadow reflected in the water beneath. Thinking it was "
                  "another dog with another piece of meat, he made up his mind to have that also. So he made a "
                  "snap at the shadow in the water, but as he opened his mouth the piece of meat fell out, dropped "
                  "into the water, and was never seen more. The dog went home with nothing, and learned that those "
                  "who grasp at the shadow may lose the substance. He sat by the brook for a long time that day, "
                  "looking at the water, and then he walked slowly home along the road.",
}


@dataclass(frozen=True)
class Shot:
    photo: str
    seconds: float
    motion: str  # "still", "pan" or "zoom"


@dataclass(frozen=True)
class StimulusSpec:
    """What one demo stimulus holds."""

    id: str
    seconds: float
    shots: tuple[Shot, ...] = ()          # empty: audio only
    fable: str | None = None              # narration, starting at speech_at_s
    speech_at_s: float = 1.0
    sounds: tuple[tuple[str, float, float], ...] = ()   # ("tone" | "noise", start_s, seconds)
    suffix: str = ".mp4"
    extra: dict = field(default_factory=dict)


def require_espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng not found: the demo's narration needs it (apt-get install espeak-ng)")
    return exe


def speak(text: str, wpm: int = 150) -> np.ndarray:
    """Mono 16 kHz float32 speech from espeak-ng."""
    import av

    exe = require_espeak()
    with tempfile.TemporaryDirectory() as d:
        wav = Path(d) / "s.wav"
        subprocess.run([exe, "-s", str(wpm), "-w", str(wav), text], check=True, capture_output=True)
        with av.open(str(wav)) as c:
            rs = av.AudioResampler(format="flt", layout="mono", rate=SR)
            parts = [f.to_ndarray().reshape(-1) for fr in c.decode(audio=0) for f in rs.resample(fr)]
    return np.concatenate(parts).astype(np.float32)


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from ``skimage.data`` (grey images are repeated to RGB)."""
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the demo stimuli need scikit-image: pip install scikit-image") from None
    img = getattr(data, name)()
    if isinstance(img, tuple):  # stereo pairs: the left view
        img = img[0]
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    step = max(1, min(img.shape[:2]) // (3 * HEIGHT))  # shrink big photos once: every frame is a crop
    return np.ascontiguousarray(img[::step, ::step])


def crop_path(img: np.ndarray, n: int, zoom: tuple[float, float], centre0, centre1) -> list[np.ndarray]:
    """Frames of a camera moving (pan + zoom) over a photo."""
    from skimage.transform import resize

    h, w = img.shape[:2]
    frames = []
    for i in range(n):
        a = i / max(n - 1, 1)
        z = zoom[0] + a * (zoom[1] - zoom[0])
        ch = min(h / z, h, w * HEIGHT / WIDTH)
        cw = ch * WIDTH / HEIGHT
        cy = (centre0[0] + a * (centre1[0] - centre0[0])) * h
        cx = (centre0[1] + a * (centre1[1] - centre0[1])) * w
        y0 = int(np.clip(cy - ch / 2, 0, h - ch))
        x0 = int(np.clip(cx - cw / 2, 0, w - cw))
        crop = img[y0:y0 + int(ch), x0:x0 + int(cw)]
        frames.append((resize(crop, (HEIGHT, WIDTH), anti_aliasing=True) * 255).astype(np.uint8))
    return frames


def shot_frames(shot: Shot, rng: np.random.Generator) -> list[np.ndarray]:
    img = photo(shot.photo)
    n = int(round(shot.seconds * FPS))
    if shot.motion == "still":
        c = (0.5, 0.5)
        return crop_path(img, n, (1.2, 1.2), c, c)
    if shot.motion == "pan":
        y = rng.uniform(0.35, 0.65)
        return crop_path(img, n, (1.6, 1.6), (y, 0.25), (y, 0.75))
    return crop_path(img, n, (1.0, 2.4), (0.5, 0.5), tuple(rng.uniform(0.35, 0.65, 2)))


def write_media(path: Path, frames: list[np.ndarray] | None, audio: np.ndarray | None, *, crf: int = 28,
                preset: str = "veryfast") -> None:
    """Write frames (H.264, 10 fps, x264 ``crf`` and ``preset``) and/or mono audio (AAC in .mp4, MP3 alone)
    with PyAV, atomically."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    with av.open(str(tmp), "w") as c:
        vs = aus = None
        if frames is not None:
            vs = c.add_stream("libx264", rate=FPS)
            vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            vs.options = {"crf": str(crf), "preset": preset}
        if audio is not None:
            aus = c.add_stream("aac" if frames is not None else "libmp3lame", rate=SR)
            aus.layout = "mono"
            aus.bit_rate = 32_000
        if frames is not None:
            for f in frames:
                for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(pkt)
            for pkt in vs.encode():
                c.mux(pkt)
        if audio is not None:
            n = 1152
            for i in range(0, len(audio), n):
                fr = av.AudioFrame.from_ndarray(audio[None, i:i + n].astype(np.float32), format="flt", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = SR, i, Fraction(1, SR)
                for pkt in aus.encode(fr):
                    c.mux(pkt)
            for pkt in aus.encode():
                c.mux(pkt)
    tmp.replace(path)


def soundtrack(spec: StimulusSpec, rng: np.random.Generator) -> np.ndarray | None:
    if spec.fable is None and not spec.sounds:
        return None
    audio = np.zeros(int(spec.seconds * SR), np.float32)
    if spec.fable is not None:
        speech = speak({**FABLES, **CORPUS_FABLES}[spec.fable])
        i0 = int(spec.speech_at_s * SR)
        speech = speech[: max(0, audio.size - i0 - SR // 2)]
        audio[i0:i0 + speech.size] += 0.8 * speech
    for kind, start, seconds in spec.sounds:
        i0, n = int(start * SR), int(seconds * SR)
        n = min(n, audio.size - i0)
        t = np.arange(n) / SR
        if kind == "tone":
            audio[i0:i0 + n] += 0.25 * np.sin(2 * np.pi * rng.choice([330.0, 440.0, 660.0]) * t) * np.hanning(n)
        else:
            audio[i0:i0 + n] += 0.12 * rng.standard_normal(n).astype(np.float32) * np.hanning(n)
    return audio


def make_stimulus(spec: StimulusSpec, out_dir: Path, seed: int) -> Path:
    """Render one stimulus to ``out_dir / (spec.id + spec.suffix)``."""
    rng = np.random.default_rng(seed)
    frames = None
    if spec.shots:
        frames = [f for shot in spec.shots for f in shot_frames(shot, rng)]
        frames = (frames + [frames[-1]] * int(spec.seconds * FPS))[: int(round(spec.seconds * FPS))]
    path = out_dir / f"{spec.id}{spec.suffix}"
    write_media(path, frames, soundtrack(spec, rng))
    return path


def plan_stimuli(n_stories: int, seconds: float, seed: int, n_test: int = 2, n_corpus: int = 0,
                 corpus_seconds: float = 120.0) -> list[StimulusSpec]:
    """The demo's stimuli: narrated clips, a sound clip, a silent clip, an audio-only story, ``n_test``
    narrated clips with sounds meant for repeated presentation (``test01``, ...), and ``n_corpus``
    longer clips for a teacher-only corpus (``corpus01``, ...: narrated with sounds, silent, audio-only
    in turn -- diversity over volume -- narrated from ``CORPUS_FABLES``, never a test clip's story)."""
    rng = np.random.default_rng(seed)
    fables = list(FABLES)

    def shots(total: float) -> tuple[Shot, ...]:
        out, t = [], 0.0
        while t < total - 1e-6:
            sec = float(min(rng.choice([3.0, 4.0, 5.0, 6.0, 8.0]), total - t))
            out.append(Shot(str(rng.choice(PHOTOS)), sec, str(rng.choice(["still", "pan", "zoom"]))))
            t += sec
        return tuple(out)

    def sounds(total: float, k: int) -> tuple[tuple[str, float, float], ...]:
        starts = np.sort(rng.uniform(2.0, total - 3.0, k))
        return tuple((str(rng.choice(["tone", "noise"])), float(round(s, 1)), 1.5) for s in starts)

    specs = [StimulusSpec(f"story{i + 1:02d}", seconds, shots(seconds), fables[i % len(fables)])
             for i in range(n_stories)]
    specs.append(StimulusSpec("sounds01", seconds, shots(seconds), None, sounds=sounds(seconds, 6)))
    specs.append(StimulusSpec("silent01", seconds, shots(seconds)))
    specs.append(StimulusSpec("radio01", seconds, (), fables[(n_stories + 1) % len(fables)], suffix=".mp3"))
    for i in range(n_test):
        specs.append(StimulusSpec(f"test{i + 1:02d}", seconds, shots(seconds), fables[(n_stories + 2 + i) % len(fables)],
                                  sounds=sounds(seconds, 2)))
    corpus_fables = list(CORPUS_FABLES)
    for i in range(n_corpus):
        sid, fable, sec = f"corpus{i + 1:02d}", corpus_fables[i % len(corpus_fables)], corpus_seconds
        kind = i % 3
        if kind == 0:
            specs.append(StimulusSpec(sid, sec, shots(sec), fable, sounds=sounds(sec, 4)))
        elif kind == 1:
            specs.append(StimulusSpec(sid, sec, shots(sec)))
        else:
            specs.append(StimulusSpec(sid, sec, (), fable, suffix=".mp3"))
    return specs
