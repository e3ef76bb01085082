"""Media probing and streamed decoding with PyAV (which bundles FFmpeg).

Nothing here loads a whole file: frames and audio are decoded packet by packet between a start and
an end time, and only the frames that are kept are converted to arrays.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEDIA_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".wav", ".flac", ".mp3", ".ogg", ".m4a"}


class MediaError(ValueError):
    """A media file cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds. ``duration_s`` is the longest stream's duration."""

    path: str
    duration_s: float
    has_video: bool
    has_audio: bool
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None


def _open(path: Path):
    import av

    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not a readable media file ({e.__class__.__name__}: {e})") from None


def _stream_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe_media(path: str | Path) -> MediaInfo:
    """Read a file's duration and streams without decoding it.

    Raises:
        MediaError: the file is missing, empty, not media, or its duration cannot be read.
    """
    path = Path(path)
    with _open(path) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        if v is None and a is None:
            raise MediaError(f"{path}: has neither a video nor an audio stream")
        durations = [d for d in (_stream_duration(s) for s in (v, a) if s is not None) if d]
        if not durations and c.duration is not None:
            durations = [c.duration / 1_000_000]  # container duration is in microseconds
        if not durations or max(durations) <= 0:
            raise MediaError(f"{path}: duration cannot be read (no stream or container duration)")
        return MediaInfo(
            path=str(path), duration_s=max(durations), has_video=v is not None, has_audio=a is not None,
            fps=float(v.average_rate) if v is not None and v.average_rate else None,
            width=v.codec_context.width if v is not None else None,
            height=v.codec_context.height if v is not None else None,
            sample_rate=a.codec_context.sample_rate if a is not None else None,
        )


def frame_luminance(path: str | Path, start_s: float, end_s: float, rate_hz: float = 2.0) -> np.ndarray:
    """Mean luminance (0-1, Rec. 601 weights) of the frame on screen at the centre of each ``1/rate_hz``
    step in ``[start_s, end_s)`` -- the frames the video backbone sees (:func:`sample_frames`).

    Returns:
        ``(n_steps,)`` float32; NaN for steps with no frame.
    """
    n = int(round((end_s - start_s) * rate_hz))
    out = np.full(n, np.nan, dtype=np.float32)
    info = probe_media(path)
    if not info.has_video:
        return out
    centres = start_s + (np.arange(n) + 0.5) / rate_hz
    for i, rgb in sample_frames(path, centres, (info.width, info.height)):
        out[i] = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean() / 255.0
    return out


def audio_rms(path: str | Path, start_s: float, end_s: float, rate_hz: float = 2.0,
              sample_rate: int = 16_000) -> np.ndarray:
    """Root-mean-square level of the mono 16 kHz audio in each ``1/rate_hz`` step of ``[start_s, end_s)``,
    decoded as the feature extractor decodes it (:func:`iter_audio`).

    Returns:
        ``(n_steps,)`` float32; NaN where the file has no audio there.
    """
    n = int(round((end_s - start_s) * rate_hz))
    sums = np.zeros(n, dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    for w0, x in iter_audio(path, start_s, end_s, end_s - start_s, sample_rate):
        step = (((w0 - start_s) * sample_rate + np.arange(x.size)) * rate_hz // sample_rate).astype(np.int64)
        keep = (step >= 0) & (step < n)
        sums += np.bincount(step[keep], weights=x[keep].astype(np.float64) ** 2, minlength=n)
        counts += np.bincount(step[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.sqrt(sums / np.maximum(counts, 1)), np.nan).astype(np.float32)


def sample_frames(path: str | Path, times_s: np.ndarray, size: tuple[int, int]):
    """The frame on screen at each of ``times_s`` (the last frame starting at or before it), scaled
    to ``size`` = (width, height) by FFmpeg while converting -- full-resolution RGB is never made.

    Yields:
        (index into ``times_s``, (height, width, 3) uint8 RGB), in time order. Times before the first
        frame or after the last get no frame.
    """
    path = Path(path)
    times_s = np.asarray(times_s, dtype=np.float64)
    if times_s.size == 0:
        return
    w, h = size
    with _open(path) as c:
        if not c.streams.video:
            return
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        c.seek(max(int(times_s[0] * 1_000_000) - 2_000_000, 0), any_frame=False)
        i, prev = 0, None
        try:
            for frame in c.decode(stream):
                if frame.time is None:
                    continue
                while i < times_s.size and frame.time > times_s[i] + 1e-6:
                    if prev is not None and prev.time <= times_s[i] + 1e-6:
                        yield i, prev.to_ndarray(format="rgb24", width=w, height=h)
                    i += 1
                if i >= times_s.size:
                    return
                prev = frame
        except av_errors() as e:
            _decoding_stopped(path, "video", None if prev is None else prev.time, e)
        if prev is not None:
            last = prev.time + (1.0 / float(stream.average_rate) if stream.average_rate else 0.0)
            while i < times_s.size and times_s[i] < last:
                yield i, prev.to_ndarray(format="rgb24", width=w, height=h)
                i += 1
            said = float(stream.duration * stream.time_base) if stream.duration else None
            if i < times_s.size and said is not None and last < said - 1.0:   # frames ran out before the stream's end
                warnings.warn(f"{path}: video frames end at {last:.2f} s, the file says {said:.2f} s: it is truncated "
                              f"or damaged there; its video features end at that time", stacklevel=2)


def _decoding_stopped(path: Path, stream: str, at_s: float | None, e: Exception) -> None:
    """What a decoding error means: nothing decoded (``at_s`` None) -- the file is unreadable
    (:class:`MediaError`); a read error (a slow mount) -- ``OSError``, tried again later; invalid data
    or an early end after ``at_s`` -- a truncated or damaged file: warn, and keep what decoded."""
    import av

    if at_s is None:
        raise MediaError(f"{path}: {stream} decoding failed ({type(e).__name__}: {e})") from None
    if not isinstance(e, (av.error.InvalidDataError, av.error.EOFError)):
        raise OSError(f"{path}: {stream} decoding failed at {at_s:.2f} s ({type(e).__name__}: {e})") from None
    warnings.warn(f"{path}: {stream} decoding stopped at {at_s:.2f} s ({type(e).__name__}); the file is truncated or "
                  f"damaged there: its {stream} features end at that time", stacklevel=4)


def av_errors() -> tuple[type, ...]:
    import av

    return (av.FFmpegError,)


def iter_audio(path: str | Path, start_s: float, end_s: float, window_s: float, sample_rate: int = 16_000):
    """Mono float32 audio of ``[start_s, end_s)`` in consecutive windows of ``window_s`` seconds,
    decoded and resampled as a stream (a 2-hour file is never held whole).

    Decoding always starts at the beginning of the file: after a seek, FFmpeg's AAC decoder gives
    samples that differ from a continuous decode (by up to 0.1 here), so a chunk extracted on its
    own would not match the same stretch of a whole-file extraction. Audio decodes at hundreds of
    times real time, so reaching the last chunk of a 2-hour file costs seconds.

    Yields:
        (window start in stimulus seconds, samples) -- the last window may be shorter, and a window
        ends early where the audio ends.
    """
    import av

    path = Path(path)
    per = int(round(window_s * sample_rate))
    first = int(round(start_s * sample_rate))
    last = int(round(end_s * sample_rate))
    with _open(path) as c:
        if not c.streams.audio:
            return
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        buf: list[np.ndarray] = []
        buf_start = first  # sample index of buf's first sample
        have = 0
        pos = None  # sample index of the next decoded sample
        try:
            for frame in c.decode(c.streams.audio[0]):
                for rf in resampler.resample(frame):
                    x = rf.to_ndarray().reshape(-1).astype(np.float32)
                    if pos is None:
                        pos = int(round(rf.time * sample_rate)) if rf.time is not None else 0
                    lo, hi = max(first - pos, 0), min(last - pos, x.size)
                    pos += x.size
                    if hi <= lo:
                        if pos >= last:
                            break
                        continue
                    buf.append(x[lo:hi])
                    have += hi - lo
                    while have >= per:
                        whole = np.concatenate(buf)
                        yield buf_start / sample_rate, whole[:per]
                        buf, have, buf_start = [whole[per:]], have - per, buf_start + per
                if pos is not None and pos >= last:
                    break
        except av.FFmpegError as e:
            _decoding_stopped(path, "audio", None if pos is None else pos / sample_rate, e)
        if have:
            yield buf_start / sample_rate, np.concatenate(buf)
