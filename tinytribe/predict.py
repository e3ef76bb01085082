"""Prediction on any video, audio or transcript: media → cached features → responses on a TR grid.

    pred = predict("runs/phase3/checkpoints/best.pt", "clip.mp4", tr_s=1.49, subject="average")
    pred.responses          # (N, V): BOLD sample k covers [times_s[k], times_s[k] + tr_s)
    save_prediction(pred, "runs/predict")   # clip.npy + clip.times.npy + clip.json, clip.h5, GIFTI per hemisphere

The TR grid starts at the stimulus onset, ``tau_k = k * TR`` for the TRs that end within the media
(a clip shorter than one TR is refused). Features come from the feature cache (``cache_dir``), made
once per media file with the backbones the checkpoint was trained on.

Long media are predicted in windows no longer than the model was trained on (``config.trained_steps``:
its time embeddings beyond are untrained), each with the 16 s lead-in the HRF needs, overlapping by a
quarter of a window and blended there with linear ramps. The fusion model's later layers attend
globally and its time embeddings are absolute, so windows do not equal one long pass exactly; the
tests bound how much adjacent windows disagree in their overlaps. Memory is one window of activations
plus the (N, V) output, whatever the length.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe.data.windows import feature_window
from tinytribe.formats import MODALITIES, FeatureCache, Word
from tinytribe.provenance import provenance
from tinytribe.spaces import PARCELLATIONS, reduces, space_size, to_space

LEAD_IN_S = 16.0          # the HRF filter's length: features this long before a window's first TR
DEFAULT_WINDOW_TRS = 100  # windows of a model whose training length is not recorded
DEFAULT_TR_S = 1.49       # a checkpoint that records no TR (CNeuroMod's, Algonauts 2025's)
FORMATS = ("npy", "h5", "gifti")


class PredictionError(ValueError):
    """Inputs that do not fit the checkpoint: one line saying what was expected and what was given."""


@dataclass
class Prediction:
    """Predicted responses of one stimulus.

    Attributes:
        responses: (N, V) float32, BOLD sample ``k`` covering ``[times_s[k], times_s[k] + tr_s)``.
        times_s: (N,) sample start times in stimulus seconds.
        space: the output space (``fsaverage4``, ``schaefer-400``, ...); ``output_names`` name the
            outputs of a ``custom:N`` space.
        subject: ``"average"`` or the checkpoint's ``study/subject``.
        words: the word events of the stimulus (for time-course plots).
        windows: the TR ranges ``(first, n)`` the model was run on.
    """

    stimulus: str
    source: str
    responses: np.ndarray
    times_s: np.ndarray
    tr_s: float
    space: str
    subject: str
    checkpoint: str
    words: list[Word] = field(default_factory=list)
    windows: list[tuple[int, int]] = field(default_factory=list)
    output_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        """Plain values describing the prediction (written beside every output)."""
        return {"stimulus": self.stimulus, "source": self.source, "space": self.space, "subject": self.subject,
                "tr_s": self.tr_s, "n_samples": int(self.responses.shape[0]), "n_outputs": int(self.responses.shape[1]),
                "times": "BOLD sample k covers [times_s[k], times_s[k] + tr_s) of stimulus time",
                "checkpoint": self.checkpoint, "windows_trs": [list(w) for w in self.windows],
                "output_names": self.output_names, **self.info}


# -- the checkpoint: subjects, spaces, what it expects of its inputs ------------------------------------------

def subject_row(config, subject: str | None) -> tuple[int | None, str]:
    """The FiLM row of ``subject`` (None: the average subject) and its name.

    ``subject`` is ``None`` / ``"average"``, ``"study/subject"``, or a subject id that only one study of
    the checkpoint has.
    """
    if subject in (None, "", "average"):
        return None, "average"
    keys = [tuple(k) for k in (config.subject_keys or [])]
    names = [f"{st}/{s}" for st, s in keys]
    if not keys:
        raise PredictionError(f"subject {subject!r}: this checkpoint records no subject names "
                              f"({config.n_subjects} FiLM rows); use subject='average'")
    hits = [i for i, (n, (_, s)) in enumerate(zip(names, keys)) if subject in (n, s)]
    if len(hits) > 1:
        raise PredictionError(f"subject {subject!r} is in several studies of this checkpoint: say which "
                              f"({', '.join(names[i] for i in hits)})")
    if not hits:
        raise PredictionError(f"subject {subject!r} is not in this checkpoint (its subjects: {', '.join(names)}; "
                              f"or 'average')")
    return hits[0], names[hits[0]]


def check_space(source: str, target: str | None) -> str:
    """The space predictions are given in: ``target`` when ``source`` reduces to it (fsaverage5 →
    fsaverage4 → parcels), else a one-line error."""
    target = target or source
    if not reduces(source, target):
        reachable = [source] + [s for s in ("fsaverage4", *PARCELLATIONS) if s != source and reduces(source, s)]
        raise PredictionError(f"space {target!r}: this checkpoint predicts {source}, which reduces only to "
                              f"{', '.join(reachable)}")
    return target


def reduce_to_parcels(x: np.ndarray, labels: np.ndarray, space: str) -> np.ndarray:
    """(N, V) responses averaged within a user's parcellation: ``labels`` (V,) integers, 1..P (0: none).

    Raises:
        PredictionError: ``labels`` do not have one entry per output.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != x.shape[1]:
        raise PredictionError(f"parcellation has {labels.shape[0] if labels.ndim == 1 else labels.shape} labels; "
                              f"the predictions have {x.shape[1]} outputs ({space}): give one label per output")
    from tinytribe.spaces import parcel_means

    return parcel_means(x, labels.astype(np.int64))


def check_features(fc: FeatureCache, config, data: dict, where: str) -> list[str]:
    """The modalities of ``fc`` the model reads, after checking they fit it.

    Args:
        data: the checkpoint's ``train_config["data"]`` (``backbones``: modality → backbone name), or {}.

    Raises:
        PredictionError: a backbone or an input size differs from the checkpoint's.
    """
    used = [m for m in MODALITIES if m in fc.backbones and fc.backbones[m].get("revision") is not None
            and fc.masks[m].any()]
    if not used:
        raise PredictionError(f"{where}: no modality has content (no frames, no sound, no words)")
    trained = data.get("backbones", {})
    for m in MODALITIES:
        if m not in fc.backbones:
            continue
        name = fc.backbones[m].get("name")
        if m in trained and name != trained[m]:
            raise PredictionError(f"{where}: {m} features are {name}, the checkpoint was trained on {trained[m]} "
                                  f"(extract with ExtractionConfig({m}={trained[m]!r}))")
        dim = fc.model_input(m, 0, 1).shape[1]
        want = config.input_dims[MODALITIES.index(m)]
        if dim != want:
            raise PredictionError(f"{where}: {m} features have {dim} values per step ({name}), the checkpoint "
                                  f"expects {want}")
    return used


# -- windows -----------------------------------------------------------------------------------------------

def window_trs(config, tr_s: float, lead_in_s: float = LEAD_IN_S) -> int:
    """The most TRs a window may hold: its lead-in and TRs within the longest trained window."""
    steps = config.trained_steps or 0
    if steps <= 0:
        return DEFAULT_WINDOW_TRS
    # a window of n TRs spans at most n * TR * rate + lead-in * rate + 2 steps (rounding at both ends)
    n = math.floor((steps - 2 - lead_in_s * config.feature_rate_hz) / (tr_s * config.feature_rate_hz) + 1e-9)
    if n < 2:
        raise PredictionError(f"the checkpoint was trained on windows of {steps / config.feature_rate_hz:g} s; "
                              f"with a {lead_in_s:g} s lead-in that leaves no room for {tr_s:g} s TRs")
    return n


def plan_windows(n_trs: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``(first, n)`` TR ranges of at most ``size`` covering ``0..n_trs - 1``, each overlapping the next
    by at least ``overlap`` (the last one ends at ``n_trs``)."""
    if not 0 <= overlap < size:
        raise PredictionError(f"overlap of {overlap} TRs: must be at least 0 and less than the window ({size} TRs)")
    if n_trs <= size:
        return [(0, n_trs)]
    stride = size - overlap
    firsts = list(range(0, n_trs - size, stride)) + [n_trs - size]
    return [(f, size) for f in firsts]


def blend_weights(windows: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per window, (n,) weights that rise linearly across its overlap with the previous window and fall
    across its overlap with the next; divided by their sum they blend adjacent windows smoothly."""
    out = []
    for j, (first, n) in enumerate(windows):
        w = np.ones(n)
        k = np.arange(n)
        if j > 0:
            prev_end = windows[j - 1][0] + windows[j - 1][1]
            ov = prev_end - first
            if ov > 0:
                w = np.minimum(w, (k + 1) / (ov + 1))
        if j + 1 < len(windows):
            ov = first + n - windows[j + 1][0]
            if ov > 0:
                w = np.minimum(w, (n - k) / (ov + 1))
        out.append(w)
    return out


def predict_features(model, fc: FeatureCache, *, tr_s: float, subject: int | None = None, n_trs: int | None = None,
                     duration_s: float | None = None, window: int | None = None, overlap: int | None = None,
                     modalities: list[str] | None = None, device: str = "cpu", return_windows: bool = False,
                     progress: bool = False):
    """Responses of ``model`` to the features ``fc`` on the TR grid ``k * tr_s``, in its own space.

    Args:
        subject: the FiLM row (None: the average subject).
        n_trs: how many TRs (default: those that end within ``duration_s``).
        duration_s: the stimulus length (default: the features' end, which rounds it up to a step).
        window, overlap: TRs per window (default :func:`window_trs`) and overlap (default a quarter).
        modalities: those the model reads (default those with content).
        return_windows: also return each window's own (n, V) prediction, before blending.

    Returns:
        (N, V) float32 responses, (N,) times, the windows ``(first, n)`` [, the per-window predictions].
    """
    import torch

    from tinytribe.model.timegrid import TimeGrid

    end_s = duration_s if duration_s is not None else fc.t0_s + fc.n_steps / fc.rate_hz
    if n_trs is None:
        n_trs = math.floor(end_s / tr_s + 1e-9)
    if n_trs < 1:
        raise PredictionError(f"{fc.stimulus_id}: {end_s:.2f} s of media is shorter than one TR ({tr_s:g} s)")
    window = window or window_trs(model.config, tr_s)
    overlap = overlap if overlap is not None else max(window // 4, 1)
    windows = plan_windows(n_trs, window, overlap)
    weights = blend_weights(windows)
    modalities = modalities or [m for m in MODALITIES if m in fc.masks and fc.masks[m].any()]
    available = torch.tensor([[m in modalities for m in MODALITIES]], device=device)
    model = model.to(device).eval()
    total, wsum = None, np.zeros(n_trs)
    parts = []
    it = windows
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(windows, desc=f"predict {fc.stimulus_id}", unit="window")
    for (first, n), w in zip(it, weights):
        times = np.arange(first, first + n) * tr_s
        feats, masks, t0 = feature_window(fc, times[0], times[-1] + tr_s, lead_in_s=LEAD_IN_S)
        with torch.no_grad():
            res = model({m: torch.from_numpy(x)[None].to(device) for m, x in feats.items()}, available,
                        torch.tensor([t0], dtype=torch.float64),
                        {"fmri": TimeGrid(torch.from_numpy(times)[None], tr_s)},
                        subject=torch.tensor([subject], device=device) if subject is not None else None,
                        masks={m: torch.from_numpy(k)[None].to(device) for m, k in masks.items()})
        y = res.responses["fmri"][0].float().cpu().numpy()   # (n, V)
        if total is None:
            total = np.zeros((n_trs, y.shape[1]), np.float32)
        total[first:first + n] += (w[:, None] * y).astype(np.float32)
        wsum[first:first + n] += w
        if return_windows:
            parts.append(y)
    out = (total / wsum[:, None].astype(np.float32), np.arange(n_trs) * tr_s, windows)
    return (*out, parts) if return_windows else out


# -- features through the cache ------------------------------------------------------------------------------

def cached_features(source: str | Path, cache_dir: str | Path, extractor=None, *, transcript: str | Path | None = None
                    ) -> FeatureCache:
    """The features of a media file (or a transcript-only stimulus) from ``cache_dir/<stem>.npz``,
    extracted and saved there first when missing or made from other bytes, backbones or settings."""
    from tinytribe.features.extract import FeatureExtractor
    from tinytribe.features.words import is_transcript, stimulus_id

    source = Path(source)
    if not source.is_file():
        raise PredictionError(f"{source}: no such file")
    extractor = extractor or FeatureExtractor()
    path = Path(cache_dir) / f"{stimulus_id(source)}.npz"
    if path.exists() and extractor.is_current(path, source, 0.0, transcript=Path(transcript) if transcript else None):
        return FeatureCache.load(path)
    if is_transcript(source):
        fc = extractor.extract(None, transcript=source, stimulus_id=stimulus_id(source))
    else:
        fc = extractor.extract(source, stimulus_id=stimulus_id(source), transcript=transcript)
    fc.save(path)
    return fc


def media_files(inputs: list[str | Path]) -> list[Path]:
    """Files to predict: each file given, and in each folder its media and its transcript-only stimuli."""
    from tinytribe.features.cache import transcript_only
    from tinytribe.features.decode import MEDIA_SUFFIXES

    out: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            media = [f for f in files if f.suffix.lower() in MEDIA_SUFFIXES]
            out += media + transcript_only(files, media)[0]
        elif p.is_file():
            out.append(p)
        else:
            raise PredictionError(f"{p}: no such file or folder")
    if not out:
        raise PredictionError(f"no media or transcript in {', '.join(map(str, inputs))}")
    from tinytribe.features.words import stimulus_id

    seen: dict[str, Path] = {}
    for f in out:   # outputs and cache files are named by stimulus: two files of one name would overwrite
        if stimulus_id(f) in seen:
            raise PredictionError(f"{seen[stimulus_id(f)]} and {f} are both stimulus {stimulus_id(f)!r}: their "
                                  f"outputs would overwrite each other; rename one or predict them separately")
        seen[stimulus_id(f)] = f
    return out


# -- the whole thing ----------------------------------------------------------------------------------------------

def predict(checkpoint, media: str | Path, *, tr_s: float | None = None, subject: str | None = None,
            space: str | None = None, parcellation: np.ndarray | None = None, cache_dir: str | Path = "runs/features",
            extractor=None, transcript: str | Path | None = None, device: str = "cpu", window: int | None = None,
            model=None, progress: bool = False) -> Prediction:
    """Responses of a checkpoint's model to one media file, audio file or transcript.

    Args:
        checkpoint: a checkpoint file, or a loaded :class:`~tinytribe.formats.Checkpoint` (many files).
        tr_s: the TR of the output grid (default: the checkpoint's training TR, else 1.49 s).
        subject: ``None``/``"average"``, or one of the checkpoint's subjects.
        space: the output space: the checkpoint's (default) or one it reduces to.
        parcellation: (V,) labels 1..P of the checkpoint's outputs, to average into P parcels instead.
        extractor: a :class:`~tinytribe.features.extract.FeatureExtractor` (default: :func:`extractor_for`
            the checkpoint on ``device``); ``cache_dir`` keeps its features.
        model: the checkpoint's model, already loaded (many files with one model).
    """
    from tinytribe.features.decode import probe_media
    from tinytribe.features.words import is_transcript
    from tinytribe.formats import Checkpoint
    from tinytribe.model.checkpoint import model_from_checkpoint

    ck, where = (checkpoint, "<checkpoint>") if isinstance(checkpoint, Checkpoint) else (Checkpoint.load(checkpoint),
                                                                                      str(checkpoint))
    model = model or model_from_checkpoint(ck, where)
    cfg = model.config
    data = (ck.train_config or {}).get("data", {}) or {}
    row, who = subject_row(cfg, subject)
    if parcellation is not None and space is not None:
        raise PredictionError(f"give space ({space!r}) or a parcellation, not both")
    target = check_space(cfg.space, space) if parcellation is None else cfg.space
    tr = float(tr_s if tr_s is not None else (data.get("tr_s") or DEFAULT_TR_S))
    if not tr > 0:
        raise PredictionError(f"tr_s must be positive, got {tr_s}")
    extractor = extractor or extractor_for(ck, device=device)
    fc = cached_features(media, cache_dir, extractor, transcript=transcript)
    used = check_features(fc, cfg, data, str(media))
    duration = None if is_transcript(media) else probe_media(media).duration_s
    y, times, windows = predict_features(model, fc, tr_s=tr, subject=row, duration_s=duration, window=window,
                                         modalities=used, device=device, progress=progress)
    if parcellation is not None:
        y = reduce_to_parcels(y, parcellation, cfg.space)
        target = f"custom:{y.shape[1]}"
    elif target != cfg.space:
        y = to_space(y, cfg.space, target)
    info = {"modalities": used, "words_source": fc.words_source, "source_sha256": fc.source_sha256,
            "checkpoint_phase": ck.phase, "checkpoint_step": ck.step,
            "tr_from": "given" if tr_s is not None else ("checkpoint" if data.get("tr_s") else "default 1.49 s"),
            "backbones": {m: b.get("name") for m, b in fc.backbones.items()},
            "space_note": _space_note(cfg.space, target), **provenance()}
    return Prediction(fc.stimulus_id, str(media), y.astype(np.float32), times, tr, target, who, where,
                      list(fc.words), windows, None, info)


def extractor_for(ck, *, device: str = "cpu", video_model: str | None = None):
    """A :class:`~tinytribe.features.extract.FeatureExtractor` with the backbones ``ck`` (a Checkpoint)
    was trained on (``train_config["data"]["backbones"]``; the defaults when not recorded)."""
    from tinytribe.features.extract import ExtractionConfig, FeatureExtractor

    trained = ((ck.train_config or {}).get("data") or {}).get("backbones", {})
    return FeatureExtractor(ExtractionConfig(device=device, video_model=video_model,
                                             **{m: trained[m] for m in ("text", "audio", "video") if m in trained}))


def _space_note(model_space: str, space: str) -> str:
    if space == model_space:
        return f"the checkpoint's own space ({space})"
    return f"reduced from the checkpoint's {model_space}"


# -- outputs --------------------------------------------------------------------------------------------------------

def save_prediction(pred: Prediction, out_dir: str | Path, formats: tuple[str, ...] | list[str] = FORMATS) -> list[Path]:
    """Write ``pred`` as ``<stimulus>.npy`` (+ ``.times.npy`` and a ``.json`` sidecar), ``<stimulus>.h5``
    and GIFTI (``<stimulus>_space-<space>_hemi-{L,R}.func.gii``; parcel spaces painted on fsaverage5 as
    ``space-fsaverage5_desc-<parcels>``; none for a ``custom:N`` space). Each file is written atomically."""
    from tinytribe._io import atomic_write, atomic_write_json

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise PredictionError(f"formats {sorted(unknown)}: unknown (choose from {', '.join(FORMATS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = pred.stimulus
    written = []
    if "npy" in formats:
        written.append(atomic_write(out / f"{stem}.npy", lambda f: np.save(f, pred.responses)))
        written.append(atomic_write(out / f"{stem}.times.npy", lambda f: np.save(f, pred.times_s)))
        written.append(atomic_write_json(out / f"{stem}.json", pred.metadata()))
    if "h5" in formats:
        written.append(save_h5(pred, out / f"{stem}.h5"))
    if "gifti" in formats and not pred.space.startswith("custom:"):
        written += save_gifti(pred, out)
    return written


def save_h5(pred: Prediction, path: str | Path) -> Path:
    """HDF5 with ``responses`` (N, V), ``times_s`` (N,) and the metadata as attributes (lists as JSON)."""
    import h5py

    from tinytribe._io import atomic_write

    def write(f) -> None:
        with h5py.File(f, "w") as h:
            h.create_dataset("responses", data=pred.responses, compression="gzip", compression_opts=4)
            h.create_dataset("times_s", data=pred.times_s)
            for k, v in pred.metadata().items():
                h.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)

    return atomic_write(path, write)


def gifti_entities(space: str) -> str:
    """BIDS-style name parts of a space's GIFTI: ``space-fsaverage4``; parcels are drawn on fsaverage5,
    so ``space-fsaverage5_desc-schaefer400`` (entity values have no hyphens)."""
    if space in PARCELLATIONS:
        return f"space-fsaverage5_desc-{space.replace('-', '')}"
    return f"space-{space}"


def save_gifti(pred: Prediction, out_dir: str | Path) -> list[Path]:
    """One ``.func.gii`` per hemisphere, one data array per TR (its time in the array's metadata).

    fsaverage5 and fsaverage4 are written on their own vertices (fsaverage4's 2,562 per hemisphere
    are the first 2,562 of fsaverage5's); a Schaefer parcellation is painted on fsaverage5 (each vertex
    its parcel's value, 0 on the medial wall).
    """
    import nibabel as nib

    from tinytribe._io import atomic_write
    from tinytribe.spaces import paint_parcels

    y, space = pred.responses, pred.space
    if space in PARCELLATIONS:
        y, mesh = np.nan_to_num(paint_parcels(y, space), nan=0.0).astype(np.float32), "fsaverage5"
    elif space in ("fsaverage5", "fsaverage4"):
        mesh = space
    else:
        raise PredictionError(f"GIFTI needs a surface space, not {space}")
    half = space_size(mesh) // 2
    paths = []
    for h, hemi in enumerate(("L", "R")):
        part = y[:, h * half:(h + 1) * half]
        meta = {"AnatomicalStructurePrimary": "CortexLeft" if hemi == "L" else "CortexRight",
                "space": space, "mesh": mesh, "TR_s": f"{pred.tr_s:g}", "subject": pred.subject,
                "stimulus": pred.stimulus, "checkpoint": pred.checkpoint,
                "tinytribe_version": str(pred.info.get("tinytribe_version", ""))}
        arrays = [nib.gifti.GiftiDataArray(part[k].astype(np.float32), intent="NIFTI_INTENT_TIME_SERIES",
                                           datatype="NIFTI_TYPE_FLOAT32",
                                           meta={"Name": f"{pred.times_s[k]:.3f} s", "time_s": f"{pred.times_s[k]:.4f}",
                                                 "TimeStep": f"{pred.tr_s * 1000:g}", "TR_index": str(k)})
                  for k in range(part.shape[0])]   # TimeStep in ms, as FreeSurfer writes time series
        img = nib.gifti.GiftiImage(darrays=arrays, meta=nib.gifti.GiftiMetaData(meta))
        path = Path(out_dir) / f"{pred.stimulus}_{gifti_entities(space)}_hemi-{hemi}.func.gii"
        paths.append(atomic_write(path, lambda f, img=img: f.write(img.to_bytes())))
    return paths


def save_pictures(pred: Prediction, out_dir: str | Path, media: str | Path | None = None, *,
                  rois: dict[str, np.ndarray] | None = None, movie: str | None = "gif",
                  measured: np.ndarray | None = None) -> list[Path]:
    """``<stimulus>_maps.png`` (the surface at three times), ``<stimulus>_timecourses.png`` (named ROIs
    under frames and words), ``<stimulus>_brain.<movie>`` (``gif``/``mp4``, None: none) and
    ``<stimulus>_report.html`` (all of it on one self-contained page) in ``out_dir``.
    Surfaces need a mesh or parcel space; a ``custom:N`` prediction gets its time courses only."""
    import matplotlib.pyplot as plt

    from tinytribe.eval.movie import write_movie
    from tinytribe.eval.plots import plot_prediction_maps, plot_timecourses
    from tinytribe.eval.rois import rois_for_space
    from tinytribe.spaces import has_surface

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    from tinytribe.features.decode import MEDIA_SUFFIXES

    video = media if media is not None and Path(media).suffix.lower() in MEDIA_SUFFIXES else None  # not a transcript
    if rois is None:
        rois = {k: v for k, v in rois_for_space(pred.space, pred.output_names).items()
                if k in ("early visual", "auditory", "language", "default mode")} if has_surface(pred.space) \
            else {n: np.eye(pred.responses.shape[1], dtype=bool)[i] for i, n in
                  enumerate((pred.output_names or [f"output {i}" for i in range(pred.responses.shape[1])])[:4])}
    figs = [("timecourses", plot_timecourses(pred, rois, measured=measured, media=video))]
    if has_surface(pred.space):
        figs.insert(0, ("maps", plot_prediction_maps(pred)))
    from tinytribe._io import atomic_write

    for name, fig in figs:
        written.append(atomic_write(out / f"{pred.stimulus}_{name}.png",
                                    lambda f, fig=fig: fig.savefig(f, format="png", dpi=90, bbox_inches="tight")))
        plt.close(fig)
    if movie and has_surface(pred.space):
        written.append(write_movie(pred, video, out / f"{pred.stimulus}_brain.{movie}"))
    from tinytribe.eval.report import write_prediction_report

    titles = {"maps": "predicted response on the inflated surface", "timecourses": "ROI time courses",
              "brain": "predicted activity beside the clip, one frame per TR"}
    pictures = [(titles[p.stem.rsplit("_", 1)[-1]], p) for p in written]
    written.append(write_prediction_report(out / f"{pred.stimulus}_report.html", pred.metadata(), pictures))
    return written


def predict_files(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, *,
                  formats: tuple[str, ...] | list[str] = FORMATS, pictures: bool = True, movie: str | None = "gif",
                  cache_dir: str | Path | None = None, progress: bool = True, **kwargs) -> dict[str, list[Path]]:
    """:func:`predict` every file of ``inputs`` (files or folders) with one model and one extractor,
    writing each one's outputs (and pictures) to ``out_dir`` as it is done. Features are cached in
    ``cache_dir`` (default ``out_dir/features``). Returns the files written per stimulus."""
    from tinytribe.formats import Checkpoint
    from tinytribe.model.checkpoint import model_from_checkpoint

    files = media_files(inputs)
    ck = Checkpoint.load(checkpoint)
    model = model_from_checkpoint(ck, checkpoint)
    kwargs.setdefault("extractor", extractor_for(ck, device=kwargs.get("device", "cpu"),
                                                 video_model=kwargs.pop("video_model", None)))
    cache = Path(cache_dir) if cache_dir is not None else Path(out_dir) / "features"
    done: dict[str, list[Path]] = {}
    it = files
    if progress and len(files) > 1:
        from tqdm.auto import tqdm

        it = tqdm(files, desc="predict", unit="file")
    for f in it:
        pred = predict(ck, f, cache_dir=cache, model=model, **kwargs)
        pred.checkpoint = str(checkpoint)
        paths = save_prediction(pred, out_dir, formats)
        if pictures:
            paths += save_pictures(pred, out_dir, f, movie=movie)
        done[pred.stimulus] = paths
    return done


def measured_responses(study_dir: str | Path, pred: Prediction, subject: str) -> np.ndarray:
    """A study's measured responses to the predicted stimulus, for comparison: ``subject``'s first run
    of it, averaged onto the prediction's TR grid and mapped to its space. (N, V), NaN where the run
    does not cover a sample.

    Raises:
        PredictionError: the study has no run of this stimulus for this subject, or its space does not
            reduce to the prediction's.
    """
    from tinytribe.data.study import load_study
    from tinytribe.eval.metrics import resample

    study = load_study(study_dir)
    runs = [r for r in study.runs if r.stimulus == pred.stimulus and r.subject == subject]
    if not runs:
        have = sorted({r.subject for r in study.runs if r.stimulus == pred.stimulus})
        raise PredictionError(f"{study_dir}: no run of {pred.stimulus!r} for {subject!r} "
                              f"({'its subjects with one: ' + ', '.join(have) if have else 'no subject saw it'})")
    run = runs[0]
    if pred.space != study.study.space and not reduces(study.study.space, pred.space):
        raise PredictionError(f"{study_dir}: its {study.study.space} data do not reduce to the predictions' "
                              f"{pred.space}: predict in {study.study.space} or a space it reduces to")
    y, _ = resample(run.fmri, run.bold_times_s, run.tr_s, pred.times_s, pred.tr_s)
    return to_space(y, study.study.space, pred.space).astype(np.float32)
