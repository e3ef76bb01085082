"""The data contracts of ``docs/FORMATS.md`` as validated dataclasses.

Five formats, each with a ``format_version`` that loaders check: a loader refuses an unknown
version, and every error is one line naming the file and the reason.

- :class:`Manifest` / :class:`ManifestItem` -- a JSON job list (``manifests/*.json``).
- :class:`FeatureCache` -- per-stimulus backbone features at 2 Hz (``features/<stimulus>.npz``).
- :class:`TeacherChunk` -- per-chunk teacher predictions at BOLD sample times (``teacher/<item>.npz``).
- :class:`Study` -- a study folder described by ``study.json``.
- :class:`Checkpoint` -- a training checkpoint (``*.pt``).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tinytribe._io import atomic_write, atomic_write_bytes, atomic_write_json
from tinytribe.config import ConfigError, from_dict, to_dict

MANIFEST_VERSION = 2  # 2 added the source fingerprint (size, mtime, quick hash), a note, and status "gone"; version 1 still loads
JOBDEF_VERSION = 1
FEATURES_VERSION = 2  # 2 added the text stream's timing channels and the words; version 1 is refused (re-extract)
TEACHER_VERSION = 2  # 2 added `events`, `sample_width_s`, `source_sha256`; version 1 files still load
STUDY_VERSION = 2  # 2 added time-range splits, `output_names`, stimulus `words` and `media`; version 1 files still load
CHECKPOINT_VERSION = 2  # 2 added the recipe, its resolved config, extra heads, the teacher and the grad scaler; version 1 still loads

Status = Literal["pending", "running", "done", "failed", "gone"]
MODALITIES = ("text", "audio", "video")
TEXT_TIMING = ("word_onsets", "speech")  # per-step timing channels of the text stream (feature cache 2)
TIMING_SCALE = 384 ** -0.5  # the channels' scale in the model input: one word ~ one unit-norm embedding entry
REEXTRACT = ("re-extract it: run notebook 01_extract_features on its media (tinytribe notebooks 01_extract_features "
             "-p media_dir=<folder> -p run_dir=<folder>), which re-extracts stale caches by itself")
SPACES = {"fsaverage5": 20484, "fsaverage4": 5124, "schaefer-400": 400, "schaefer-1000": 1000}


class FormatError(ValueError):
    """A file does not follow its format; the message names the file and the reason."""


def space_size(space: str) -> int:
    """Number of outputs of an output space: ``fsaverage5``, ``fsaverage4``, ``schaefer-400``,
    ``schaefer-1000`` or ``custom:N``."""
    if space in SPACES:
        return SPACES[space]
    m = re.fullmatch(r"custom:(\d+)", space)
    if m and int(m.group(1)) > 0:
        return int(m.group(1))
    raise ValueError(f"unknown output space {space!r} (known: {', '.join(SPACES)}, custom:N)")


def _check_version(kind: str, found: Any, supported: int, path: Path | str) -> None:
    if found != supported:
        raise FormatError(f"{path}: {kind} format_version {found!r} is not supported "
                          f"(this tinytribe reads version {supported}); upgrade tinytribe or rebuild the file")


def _read_json(path: Path, kind: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(f"{path}: no such {kind} file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        bak = path.with_name(path.name + ".bak")
        hint = f"; the previous good copy is {bak}" if bak.exists() else ""
        raise FormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}){hint}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level")
    return data


def _build(cls: type, data: dict, path: Path | str) -> Any:
    try:
        return from_dict(cls, data, where=str(path))
    except ConfigError as e:
        raise FormatError(str(e)) from None


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------

@dataclass
class ManifestItem:
    """One unit of work: a time window ``[start_s, end_s)`` of one media source."""

    id: str
    source: str
    start_s: float
    end_s: float
    status: Status = "pending"
    attempts: int = 0
    last_error: str | None = None
    worker: str | None = None
    lease_until: float | None = None
    output: str | None = None
    output_sha256: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    source_size: int | None = None      # the media file when the item was made: size in bytes,
    source_mtime: float | None = None   # modification time,
    source_hash: str | None = None      # and quick hash (sha256 of its size and first and last MiB)
    note: str | None = None             # why the item last changed state without being worked (source changed, gone)
    was: str | None = None              # a gone item's status before it went (restored if its file comes back unchanged)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)) or self.end_s <= self.start_s:
            raise ValueError(f"item {self.id!r}: needs start_s < end_s, got {self.start_s}..{self.end_s}")
        if self.attempts < 0:
            raise ValueError(f"item {self.id!r}: attempts must be >= 0")

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class Manifest:
    """A job shard: items to process, their state, and how the job was defined."""

    job: str
    chunk_s: float
    items: list[ManifestItem]
    max_attempts: int = 3
    shard_index: int = 0
    shard_count: int = 1
    created_by: dict[str, str] = field(default_factory=dict)
    format: Literal["tinytribe.manifest"] = "tinytribe.manifest"
    format_version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        ids = [it.id for it in self.items]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate item id {dup!r}")
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard {self.shard_index} of {self.shard_count} is out of range")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def item(self, item_id: str) -> ManifestItem:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(f"no item {item_id!r} in this manifest")

    def to_json(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_json(cls, data: dict, path: Path | str = "<manifest>") -> "Manifest":
        if data.get("format") not in (None, "tinytribe.manifest"):
            raise FormatError(f"{path}: not a tinytribe manifest (format {data.get('format')!r})")
        if data.get("format_version") != 1:   # version 1: the same items without fingerprints
            _check_version("manifest", data.get("format_version"), MANIFEST_VERSION, path)
        return _build(cls, {**data, "format_version": MANIFEST_VERSION}, path)

    def save(self, path: str | Path) -> Path:
        """Write atomically, keeping the previous version as ``<path>.bak``.

        One item per line: the file stays readable and diffable, and large manifests write fast.
        """
        data = self.to_json()
        items = data.pop("items")
        head = json.dumps(data, ensure_ascii=False, allow_nan=False)[:-1]
        body = ",\n".join(json.dumps(it, ensure_ascii=False, allow_nan=False) for it in items)
        text = f'{head}, "items": [\n{body}\n]}}\n' if items else f'{head}, "items": []}}\n'
        return atomic_write_bytes(path, text.encode("utf-8"), backup=True)

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        return cls.from_json(_read_json(path, "manifest"), path)


@dataclass
class JobStimulus:
    """A stimulus a job definition names; matched to a media file by its file name stem."""

    id: str
    expected_duration_s: float | None = None


@dataclass
class JobGroup:
    """A group of stimuli with a priority (1 runs first) and an optional target in hours.

    With ``stimuli`` listed, files are matched by id anywhere under the media folder; without, every
    media file in the folder ``<media>/<name>/`` belongs to the group.
    """

    name: str
    priority: int
    target_hours: float | None = None
    description: str = ""
    stimuli: list[JobStimulus] = field(default_factory=list)


@dataclass
class JobDefinition:
    """What a job should cover (``manifests/*.json``): users start from one and build a manifest
    from it for the media they have."""

    name: str
    description: str
    job: str
    chunk_s: float
    groups: list[JobGroup]
    format: Literal["tinytribe.jobdef"] = "tinytribe.jobdef"
    format_version: int = JOBDEF_VERSION

    @classmethod
    def load(cls, path: str | Path) -> "JobDefinition":
        path = Path(path)
        data = _read_json(path, "job definition")
        if data.get("format") != "tinytribe.jobdef":
            raise FormatError(f"{path}: not a tinytribe job definition (format {data.get('format')!r})")
        _check_version("job definition", data.get("format_version"), JOBDEF_VERSION, path)
        return _build(cls, data, path)

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, to_dict(self))


# --------------------------------------------------------------------------------------------------
# Feature cache
# --------------------------------------------------------------------------------------------------

def _npz_bytes(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    """An uncompressed .npz with row-major members (so that lazy readers can read rows: ``data.lazy``)."""
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta, allow_nan=False)),
             **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _read_npz(path: Path, kind: str) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FormatError(f"{path}: no such {kind} file") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError ...
        raise FormatError(f"{path}: unreadable {kind} file ({type(e).__name__}: {e})") from None
    if "meta" not in arrays:
        raise FormatError(f"{path}: not a tinytribe {kind} file (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: its 'meta' entry is not valid JSON ({e.msg})") from None
    return arrays, meta


def _read_npz_meta(path: Path, kind: str) -> dict:
    """The JSON ``meta`` entry of an .npz, without reading its arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise FormatError(f"{path}: no such {kind} file") from None
    except Exception as e:
        raise FormatError(f"{path}: unreadable {kind} file ({type(e).__name__}: {e})") from None


def _check_finite(name: str, a: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        idx = np.argwhere(bad)[0].tolist()
        raise FormatError(f"{where}: {name} has {int(bad.sum())} NaN/Inf values (first at index {idx})")


@dataclass(frozen=True)
class Word:
    """A word event: ``word`` spoken from ``onset`` for ``duration`` seconds (stimulus time), with the
    recogniser's ``confidence`` (0-1) when it came from speech recognition."""

    word: str
    onset: float
    duration: float
    confidence: float | None = None

    @property
    def end(self) -> float:
        return self.onset + self.duration


def with_timing(embedding: np.ndarray, timing: dict[str, np.ndarray], steps: slice, dtype: Any) -> np.ndarray:
    """The student's text input for ``steps``: the embedding (already sliced) followed by the timing
    channels (``TEXT_TIMING`` order) times ``TIMING_SCALE``."""
    return np.concatenate([embedding] + [(TIMING_SCALE * timing[k][steps, None]).astype(dtype) for k in TEXT_TIMING],
                          axis=1)


def words_from_arrays(get: Any) -> list[Word]:
    """The word events of a feature cache from its ``words__*`` members (``get(name, default)``)."""
    return [Word(str(t), float(o), float(d), None if np.isnan(c) else float(c)) for t, o, d, c in
            zip(get("words__text", []), get("words__onset_s", []), get("words__duration_s", []),
                get("words__confidence", []))]


@dataclass
class FeatureCache:
    """Backbone features of one stimulus on a regular grid.

    Step ``i`` summarises stimulus time ``[t0_s + i / rate_hz, t0_s + (i + 1) / rate_hz)``. Every
    modality has the same number of steps; ``masks[m][i]`` is False where modality ``m`` has no
    content at step ``i`` (no audio track, silence before the first word, ...), and its features
    there are zero.

    The text stream carries its timing beside the embedding: ``timing["word_onsets"][i]`` counts the
    words whose onset falls in step ``i``, ``timing["speech"][i]`` is the share of the step inside a
    word's interval (0 silence, 1 speech throughout). ``words`` are the word events the text came from
    (onsets inside the cache's window), ``words_source`` says where they came from.
    """

    stimulus_id: str
    rate_hz: float
    t0_s: float
    features: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    backbones: dict[str, dict[str, Any]]
    extraction: dict[str, Any]
    source: str
    source_sha256: str
    timing: dict[str, np.ndarray] = field(default_factory=dict)
    words: list[Word] = field(default_factory=list)
    words_source: str = "none"
    transcript_sha256: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    format_version: int = FEATURES_VERSION

    def __post_init__(self) -> None:
        where = f"features of {self.stimulus_id!r}"
        if self.rate_hz <= 0:
            raise FormatError(f"{where}: rate_hz must be > 0")
        if set(self.features) != set(self.masks) or set(self.features) != set(self.backbones):
            raise FormatError(f"{where}: features, masks and backbones must name the same modalities")
        lengths = {m: a.shape[0] for m, a in self.features.items()}
        if len(set(lengths.values())) > 1:
            raise FormatError(f"{where}: modalities differ in length {lengths}")
        for m, a in self.features.items():
            if a.ndim != 2:
                raise FormatError(f"{where}: {m} features must be (T, D), got shape {a.shape}")
            self.features[m] = a.astype(np.float16, copy=False)
            self.masks[m] = np.asarray(self.masks[m]).astype(bool, copy=False)
            if self.masks[m].shape != (a.shape[0],):
                raise FormatError(f"{where}: {m} mask must be ({a.shape[0]},), got {self.masks[m].shape}")
            _check_finite(f"{m} features", self.features[m], where)
        if "text" in self.features:
            missing = [k for k in TEXT_TIMING if k not in self.timing]
            if missing:
                raise FormatError(f"{where}: the text stream's timing channel {missing[0]!r} is missing")
        for k, a in self.timing.items():
            if k not in TEXT_TIMING:
                raise FormatError(f"{where}: unknown timing channel {k!r} (known: {', '.join(TEXT_TIMING)})")
            self.timing[k] = np.asarray(a, np.float32)
            if self.timing[k].shape != (self.n_steps,):
                raise FormatError(f"{where}: timing channel {k} must be ({self.n_steps},), got {self.timing[k].shape}")
            _check_finite(f"timing channel {k}", self.timing[k], where)

    @property
    def n_steps(self) -> int:
        return next(iter(self.features.values())).shape[0]

    def times(self) -> np.ndarray:
        """Start time of each step, in stimulus seconds: ``(T,)`` float64."""
        return self.t0_s + np.arange(self.n_steps) / self.rate_hz

    def model_input(self, modality: str, start: int | None = None, stop: int | None = None,
                    dtype: Any = np.float32) -> np.ndarray:
        """(T, D) of steps ``start:stop`` (default all), in ``dtype``: what the student's projector for
        ``modality`` reads (:func:`with_timing` for text)."""
        steps = slice(start, stop)
        x = self.features[modality][steps].astype(dtype)
        return with_timing(x, self.timing, steps, dtype) if modality == "text" else x

    def save(self, path: str | Path) -> Path:
        arrays = {f"feat__{m}": a for m, a in self.features.items()}
        arrays |= {f"mask__{m}": a.astype(np.uint8) for m, a in self.masks.items()}
        arrays |= {f"timing__{k}": a for k, a in self.timing.items()}
        arrays |= {"words__text": np.array([w.word for w in self.words], dtype=str),
                   "words__onset_s": np.array([w.onset for w in self.words], np.float64),
                   "words__duration_s": np.array([w.duration for w in self.words], np.float64),
                   "words__confidence": np.array([np.nan if w.confidence is None else w.confidence
                                                  for w in self.words], np.float64)}
        meta = {k: v for k, v in to_dict(self).items() if k not in ("features", "masks", "timing", "words")}
        meta["format"] = "tinytribe.features"
        return atomic_write_bytes(path, _npz_bytes(arrays, meta))

    @staticmethod
    def check_meta(meta: dict, path: str | Path) -> dict:
        """A feature cache's ``meta``, its format and version checked (a version 1 cache is refused with
        the command that remakes it)."""
        if meta.get("format") != "tinytribe.features":
            raise FormatError(f"{path}: not a tinytribe feature cache")
        if meta.get("format_version") == 1:
            raise FormatError(f"{path}: feature cache version 1 has no word-timing channels (version 2 does); "
                              + REEXTRACT)
        _check_version("feature cache", meta.get("format_version"), FEATURES_VERSION, path)
        return meta

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """Only the ``meta`` of a feature cache (no arrays are read), checked like :meth:`load` checks it."""
        return FeatureCache.check_meta(_read_npz_meta(Path(path), "feature cache"), path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureCache":
        path = Path(path)
        arrays, meta = _read_npz(path, "feature cache")
        cls.check_meta(meta, path).pop("format")
        mods = [k.split("__", 1)[1] for k in arrays if k.startswith("feat__")]
        try:
            return cls(features={m: arrays[f"feat__{m}"] for m in mods},
                       masks={m: arrays[f"mask__{m}"] for m in mods},
                       timing={k.split("__", 1)[1]: a for k, a in arrays.items() if k.startswith("timing__")},
                       words=words_from_arrays(arrays.get), **meta)
        except KeyError as e:
            raise FormatError(f"{path}: missing array {e}") from None
        except TypeError as e:
            raise FormatError(f"{path}: bad metadata ({e})") from None
        except FormatError as e:
            raise FormatError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Teacher cache
# --------------------------------------------------------------------------------------------------

@dataclass
class TeacherChunk:
    """Teacher outputs for one chunk of one stimulus.

    ``predictions[k]`` is the teacher's estimate of the BOLD response at stimulus time
    ``bold_times_s[k]``, a sample covering ``[bold_times_s[k], bold_times_s[k] + sample_width_s)`` --
    for TRIBE v2, the row made from the segment starting at ``t`` stands for BOLD at
    ``t + hrf_offset_s`` (5 s) and is 1 s wide. Activations have their own time stamps (2 Hz for
    TRIBE v2's fusion transformer). ``events`` are the inputs the teacher was given for this chunk
    (TRIBE v2's events table as records), so a result can be traced to exactly what produced it.
    """

    chunk_id: str
    stimulus_id: str
    source: str
    start_s: float
    end_s: float
    space: str
    predictions: np.ndarray
    bold_times_s: np.ndarray
    activations: dict[str, np.ndarray]
    activation_times_s: dict[str, np.ndarray]
    teacher: dict[str, str]
    hrf_offset_s: float
    sample_width_s: float = 1.0
    events: list[dict[str, Any]] = field(default_factory=list)
    source_sha256: str = ""
    provenance: dict[str, str] = field(default_factory=dict)
    format_version: int = TEACHER_VERSION

    def __post_init__(self) -> None:
        where = f"teacher chunk {self.chunk_id!r}"
        if not self.sample_width_s > 0:
            raise FormatError(f"{where}: sample_width_s must be > 0, got {self.sample_width_s}")
        n_out = space_size(self.space)
        p = self.predictions
        if p.ndim != 2 or p.shape[1] != n_out:
            raise FormatError(f"{where}: predictions must be (n, {n_out}) for {self.space}, got {p.shape}")
        self.predictions = p.astype(np.float16, copy=False)
        self.bold_times_s = np.asarray(self.bold_times_s, dtype=np.float64)
        if self.bold_times_s.shape != (p.shape[0],):
            raise FormatError(f"{where}: bold_times_s must be ({p.shape[0]},), got {self.bold_times_s.shape}")
        if p.shape[0] > 1 and not np.all(np.diff(self.bold_times_s) > 0):
            raise FormatError(f"{where}: bold_times_s must increase strictly")
        _check_finite("predictions", self.predictions, where)
        if set(self.activations) != set(self.activation_times_s):
            raise FormatError(f"{where}: every activation needs its own times")
        for name, a in self.activations.items():
            self.activations[name] = a.astype(np.float16, copy=False)
            t = self.activation_times_s[name] = np.asarray(self.activation_times_s[name], dtype=np.float64)
            if a.ndim != 2 or t.shape != (a.shape[0],):
                raise FormatError(f"{where}: activation {name} is {a.shape} with {t.shape} times")
            _check_finite(f"activation {name}", self.activations[name], where)

    @staticmethod
    def check_meta(meta: dict, path: str | Path) -> dict:
        """A teacher chunk's ``meta``, its format and version checked (version 1 reads as version 2)."""
        if meta.get("format") != "tinytribe.teacher":
            raise FormatError(f"{path}: not a tinytribe teacher chunk")
        if meta.get("format_version") == 1:  # version 1 had neither field; its rows were 1 s wide
            meta["format_version"] = TEACHER_VERSION
        _check_version("teacher cache", meta.get("format_version"), TEACHER_VERSION, path)
        return meta

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """Only the ``meta`` of a teacher chunk (no arrays are read), checked like :meth:`load` checks it."""
        return TeacherChunk.check_meta(_read_npz_meta(Path(path), "teacher cache"), path)

    def take_predictions(self, mask: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(k, V): the rows ``mask`` selects (the same call reads a lazy teacher by rows)."""
        return self.predictions[mask].astype(dtype)

    def take_activation(self, name: str, mask: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        return self.activations[name][mask].astype(dtype)

    def save(self, path: str | Path) -> Path:
        arrays = {"predictions": self.predictions, "bold_times_s": self.bold_times_s}
        arrays |= {f"act__{n}": a for n, a in self.activations.items()}
        arrays |= {f"act_times__{n}": t for n, t in self.activation_times_s.items()}
        skip = ("predictions", "bold_times_s", "activations", "activation_times_s")
        meta = {k: v for k, v in to_dict(self).items() if k not in skip}
        meta["format"] = "tinytribe.teacher"
        return atomic_write_bytes(path, _npz_bytes(arrays, meta))

    @classmethod
    def load(cls, path: str | Path) -> "TeacherChunk":
        path = Path(path)
        arrays, meta = _read_npz(path, "teacher cache")
        cls.check_meta(meta, path).pop("format")
        names = [k.split("__", 1)[1] for k in arrays if k.startswith("act__")]
        try:
            return cls(predictions=arrays["predictions"], bold_times_s=arrays["bold_times_s"],
                       activations={n: arrays[f"act__{n}"] for n in names},
                       activation_times_s={n: arrays[f"act_times__{n}"] for n in names}, **meta)
        except KeyError as e:
            raise FormatError(f"{path}: missing array {e}") from None
        except (TypeError, ValueError) as e:
            raise FormatError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------------
# Study layout
# --------------------------------------------------------------------------------------------------

@dataclass
class StudyStimulus:
    """A stimulus of a study; paths are relative to the study folder.

    ``words`` (a transcript: TextGrid, TSV, SRT, VTT) and ``media`` (the audio or video file) are
    optional; baselines that need them (word rate, audio envelope) say so when they are missing.
    """

    duration_s: float
    features: str
    teacher: list[str] = field(default_factory=list)
    modalities: list[str] | None = None  # None: those its feature cache has content for
    words: str | None = None
    media: str | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities or () if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r} (known: {', '.join(MODALITIES)})")


@dataclass(frozen=True)
class SplitRange:
    """Part of a split: the BOLD samples of every run of ``stimulus`` whose time lies in ``[start_s, end_s)``."""

    stimulus: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s)) or self.end_s <= self.start_s:
            raise ValueError(f"split range of {self.stimulus!r}: needs finite start_s < end_s, got "
                             f"{self.start_s}..{self.end_s}")

    def __str__(self) -> str:
        return f"{self.stimulus}[{self.start_s:g}, {self.end_s:g}) s"


SplitPart = str | SplitRange  # a whole stimulus (all its runs) or a time range of one


def _split_part(value: Any, where: str) -> SplitPart:
    if isinstance(value, (str, SplitRange)):
        return value
    if isinstance(value, dict):
        return from_dict(SplitRange, value, where=where)
    raise ConfigError(f"{where}: a split part is a stimulus id or {{stimulus, start_s, end_s}}, got {value!r}")


def _interval(part: SplitPart) -> tuple[str, float, float]:
    """(stimulus, start, end) of a part; a whole stimulus is all of time."""
    return (part, -math.inf, math.inf) if isinstance(part, str) else (part.stimulus, part.start_s, part.end_s)


def _overlap(a: SplitPart, b: SplitPart) -> bool:
    (sa, a0, a1), (sb, b0, b1) = _interval(a), _interval(b)
    return sa == sb and a0 < b1 and b0 < a1


def _part_str(part: SplitPart) -> str:
    return f"{part} (whole)" if isinstance(part, str) else str(part)


@dataclass
class StudyRun:
    """One fMRI run: a subject watching a stimulus (``repeat`` counts presentations from 0).

    BOLD sample times come from ``bold_times`` (an ``.npy`` of stimulus seconds) or, when it is
    absent, from ``first_bold_s + k * tr_s``.
    """

    subject: str
    stimulus: str
    fmri: str
    tr_s: float | None = None
    first_bold_s: float | None = None
    bold_times: str | None = None
    repeat: int = 0

    def __post_init__(self) -> None:
        if self.bold_times is None and (self.tr_s is None or self.first_bold_s is None):
            raise ValueError(f"run {self.subject}/{self.stimulus}: give bold_times or both tr_s and first_bold_s")
        if self.tr_s is not None and self.tr_s <= 0:
            raise ValueError(f"run {self.subject}/{self.stimulus}: tr_s must be > 0")


@dataclass
class Study:
    """A study folder: stimuli, subjects, fMRI runs, splits (``study.json``).

    A split lists parts: stimulus ids (every run of the stimulus) or :class:`SplitRange` time ranges
    of a stimulus. Splits must be disjoint: two parts of different splits whose time spans overlap
    (a whole stimulus spans all of its time) are refused, naming both. ``output_names`` names the
    outputs of the space (recommended for ``custom:N``: the ROIs of ROI time courses).
    """

    name: str
    space: str
    subjects: list[str]
    stimuli: dict[str, StudyStimulus]
    runs: list[StudyRun]
    splits: dict[str, list[Any]]
    medial_wall: str | None = None
    output_names: list[str] | None = None
    provenance: dict[str, str] = field(default_factory=dict)
    format: Literal["tinytribe.study"] = "tinytribe.study"
    format_version: int = STUDY_VERSION

    def __post_init__(self) -> None:
        space_size(self.space)
        if self.output_names is not None:
            if len(self.output_names) != self.n_outputs:
                raise ValueError(f"output_names has {len(self.output_names)} names, the space {self.space} has "
                                 f"{self.n_outputs} outputs")
            dup = [n for n in self.output_names if self.output_names.count(n) > 1]
            if dup:
                raise ValueError(f"output_names: {dup[0]!r} appears twice")
        for r in self.runs:
            if r.subject not in self.subjects:
                raise ValueError(f"run names unknown subject {r.subject!r}")
            if r.stimulus not in self.stimuli:
                raise ValueError(f"run names unknown stimulus {r.stimulus!r}")
        self.splits = {name: [_split_part(p, f"splits.{name}[{i}]") for i, p in enumerate(parts)]
                       for name, parts in self.splits.items()}
        for split, parts in self.splits.items():
            for p in parts:
                sid = p if isinstance(p, str) else p.stimulus
                if sid not in self.stimuli:
                    raise ValueError(f"split {split!r} names unknown stimulus {sid!r}")
        check_disjoint(self.splits)

    @property
    def n_outputs(self) -> int:
        return space_size(self.space)

    def save(self, root: str | Path) -> Path:
        """Write ``study.json`` (always in the current version, whatever version it was read from)."""
        return atomic_write_json(Path(root) / "study.json", to_dict(self) | {"format_version": STUDY_VERSION})

    @classmethod
    def load(cls, root: str | Path) -> "Study":
        path = Path(root) / "study.json"
        data = _read_json(path, "study")
        if data.get("format") != "tinytribe.study":
            raise FormatError(f"{path}: not a tinytribe study (format {data.get('format')!r})")
        if data.get("format_version") != 1:  # version 1 is a subset of version 2: it loads unchanged
            _check_version("study", data.get("format_version"), STUDY_VERSION, path)
        return _build(cls, data, path)


def check_disjoint(splits: dict[str, list[SplitPart]]) -> None:
    """Refuse two splits whose parts overlap in time (a whole stimulus spans all of it), naming both.
    The check is on time spans, not samples: ranges that merely touch a TR's interval are refused too.

    Raises:
        ValueError: ``splits 'train' and 'test' overlap: story[0, 240) s and story[200, 300) s``.
    """
    names = list(splits)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1:]:
            for pa in splits[a]:
                for pb in splits[b]:
                    if _overlap(pa, pb):
                        raise ValueError(f"splits {a!r} and {b!r} overlap: {_part_str(pa)} and {_part_str(pb)}")


# --------------------------------------------------------------------------------------------------
# Checkpoint
# --------------------------------------------------------------------------------------------------

@dataclass
class Checkpoint:
    """Everything needed to rebuild a model and resume its training exactly.

    ``config`` is the fully resolved model config (a checkpoint rebuilds its own model);
    ``recipe`` / ``train_config`` name the training recipe and hold its resolved config; ``heads_state``
    the state of a phase's extra heads (Phase 1's prediction heads), by name; ``teacher`` the teacher
    (``id``, ``revision``) whose outputs the training used, or None; ``rng_state`` holds plain values
    and tensors only, so loading needs no pickle. Version-1 files load with the new fields empty.
    """

    model_state: dict[str, Any]
    config: dict[str, Any]
    phase: str
    step: int = 0
    epoch: int = 0
    data_position: dict[str, Any] = field(default_factory=dict)
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    recipe: str = ""
    train_config: dict[str, Any] = field(default_factory=dict)
    heads_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    teacher: dict[str, str] | None = None
    scaler_state: dict[str, Any] | None = None
    format_version: int = CHECKPOINT_VERSION

    def save(self, path: str | Path) -> Path:
        import torch

        payload = dict(to_dict_shallow(self), format="tinytribe.checkpoint", format_version=CHECKPOINT_VERSION)
        return atomic_write(path, lambda f: torch.save(payload, f))

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> "Checkpoint":
        import torch

        path = Path(path)
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise FormatError(f"{path}: no such checkpoint") from None
        except Exception as e:
            raise FormatError(f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(payload, dict) or payload.pop("format", None) != "tinytribe.checkpoint":
            raise FormatError(f"{path}: not a tinytribe checkpoint")
        if payload.get("format_version") != 1:   # version 1: the same fields, fewer of them (it says which it was)
            _check_version("checkpoint", payload.get("format_version"), CHECKPOINT_VERSION, path)
        try:
            return cls(**payload)
        except TypeError as e:
            raise FormatError(f"{path}: bad checkpoint fields ({e})") from None


def to_dict_shallow(obj: Any) -> dict[str, Any]:
    """Top-level fields of a dataclass, values untouched (tensors stay tensors)."""
    return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
