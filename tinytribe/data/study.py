"""Load a study folder (``docs/FORMATS.md`` §4) and say exactly what is wrong with it.

    study = load_study("runs/demo_study")                      # z-scored runs, features, teacher
    study = load_study(path, nan_policy="interpolate", length_tolerance_s=30)

Checks, each a one-line :class:`StudyError` naming the file and the reason:

- every feature and teacher file exists and is in its format;
- every fMRI run is ``(n_TR, V)`` with ``V`` the study space's size, and its BOLD times increase;
- no NaN/Inf outside the medial wall (count and location; ``nan_policy="drop"`` removes those TRs,
  ``"interpolate"`` fills them per vertex along time);
- the run's BOLD span matches the stimulus duration within ``length_tolerance_s`` (by how much it does not);
- the medial-wall mask has the right length;
- every modality a stimulus lists is in its feature cache (its ``words`` and ``media`` files are checked
  by what needs them: the ridge's low-level bands).

Runs are optionally detrended (``detrend="linear"``, ``"polynomial"``, ``"cosine"``: a least-squares
fit of drift regressors removed per vertex, the same regressors as nilearn's ``drift_model``) and then
z-scored. Splits resolve to :class:`~tinytribe.data.splits.Selection` s of samples (time ranges
inside a run included).

A run whose fMRI file is missing is skipped with a warning (Algonauts 2025's sub-02 and sub-05 really
lack some episodes); ``missing_runs="error"`` makes it an error. Medial-wall vertices are set to 0 and
excluded from losses and means through :attr:`LoadedStudy.cortex`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tinytribe.data.splits import Selection, as_selection, resolve
from tinytribe.formats import MODALITIES, FeatureCache, FormatError, SplitPart, Study, TeacherChunk


class StudyError(ValueError):
    """What is wrong with a study, in one line naming the file."""


@dataclass
class RunData:
    """One fMRI run, loaded: ``fmri[k]`` is the BOLD sample at ``bold_times_s[k]`` covering ``tr_s``."""

    subject: str
    subject_index: int
    stimulus: str
    repeat: int
    fmri: np.ndarray
    bold_times_s: np.ndarray
    tr_s: float
    path: Path


@dataclass
class StimulusData:
    id: str
    duration_s: float
    features: FeatureCache
    modalities: list[str]
    teacher: TeacherChunk | None = None


@dataclass
class LoadedStudy:
    root: Path
    study: Study
    runs: list[RunData]
    stimuli: dict[str, StimulusData]
    medial_wall: np.ndarray           # (V,) bool
    warnings: list[str] = field(default_factory=list)

    @property
    def cortex(self) -> np.ndarray:
        """(V,) bool: the outputs that count in losses and means."""
        return ~self.medial_wall

    @property
    def subjects(self) -> list[str]:
        return self.study.subjects

    def split_parts(self, name: str) -> list[SplitPart]:
        """The parts of split ``name`` (a one-line error when there is no such split)."""
        if name not in self.study.splits:
            raise StudyError(f"{self.root / 'study.json'}: no split {name!r} (splits: {', '.join(self.study.splits)})")
        return self.study.splits[name]

    def split(self, name: str) -> Selection:
        """The samples split ``name`` holds: whole runs of its stimuli, the samples of its time ranges."""
        return resolve(self, self.split_parts(name))

    def select(self, parts: list[SplitPart]) -> Selection:
        """The samples that split parts (stimulus ids, :class:`~tinytribe.formats.SplitRange` s) hold,
        e.g. a fold of :func:`~tinytribe.data.splits.time_folds`."""
        return resolve(self, parts)

    def presentations(self, subject: str, runs: Selection | list[int]) -> dict[int, list[int]]:
        """The subject's runs among ``runs`` grouped by presentation (``repeat``), each in stimulus order."""
        out: dict[int, list[int]] = {}
        for i in sorted((i for i in runs if self.runs[i].subject == subject), key=lambda i: self.runs[i].stimulus):
            out.setdefault(self.runs[i].repeat, []).append(i)
        return out

    def repeats(self, subject: str, runs: Selection | list[int]) -> np.ndarray:
        """(R, T, V): each presentation's selected samples concatenated in stimulus order and aligned in
        time (only the BOLD times every presentation has), for noise ceilings.

        Raises:
            StudyError: fewer than two presentations, presentations of different stimuli, or no sample
                time that all of them share.
        """
        sel = as_selection(self, runs)
        groups = [g for _, g in sorted(self.presentations(subject, sel).items())]
        stimuli = {tuple(self.runs[i].stimulus for i in g) for g in groups}
        if len(groups) < 2 or len(stimuli) != 1:
            raise StudyError(f"{self.root}: {subject} has {len(groups)} presentations of "
                             f"{len(stimuli)} different stimulus lists among these runs; need 2+ of the same")
        masks = self.common_samples(groups, sel.masks)
        if not any(m.any() for m in masks.values()):
            raise StudyError(f"{self.root}: the presentations of {subject} share no BOLD sample time")
        return np.stack([np.concatenate([self.runs[i].fmri[masks[i]] for i in g]) for g in groups])

    def common_samples(self, groups: list[list[int]], masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Masks (within ``masks``) of the samples whose stimulus and BOLD time (to the millisecond) every
        group of runs has, so that the groups' samples, concatenated run by run, line up in time."""
        def keys(i: int, m: np.ndarray) -> set[tuple[str, int]]:
            return {(self.runs[i].stimulus, k) for k in time_keys(self.runs[i].bold_times_s[m])}

        shared = set.intersection(*[set().union(*[keys(i, masks[i]) for i in g]) for g in groups])
        out = {}
        for g in groups:
            for i in g:
                ms = time_keys(self.runs[i].bold_times_s)
                out[i] = masks[i] & np.array([(self.runs[i].stimulus, k) in shared for k in ms], bool)
        return out


def data_summary(studies: list[LoadedStudy]) -> dict:
    """What a model trained on ``studies`` expects of its inputs, for its checkpoint: the feature
    backbone of each modality (``{"text": "minilm", ...}``, the backbones stimuli actually used) and
    the TR of their fMRI runs (the first study's; None for corpora without fMRI)."""
    backbones: dict[str, str] = {}
    for st in studies:
        for stim in st.stimuli.values():
            for m, b in stim.features.backbones.items():
                if b.get("revision") is not None:
                    backbones.setdefault(m, b["name"])
    trs = [r.tr_s for st in studies for r in st.runs]
    return {"backbones": backbones, "tr_s": float(trs[0]) if trs else None}


def time_keys(times_s: np.ndarray) -> list[int]:
    """BOLD times as whole milliseconds: the keys by which samples of different runs are matched."""
    return np.round(np.asarray(times_s, np.float64) * 1e3).astype(np.int64).tolist()


def _bad_values(a: np.ndarray, where: str, cortex: np.ndarray) -> str | None:
    bad = ~np.isfinite(a) & cortex[None, :]
    if not bad.any():
        return None
    trs = np.flatnonzero(bad.any(axis=1))
    verts = np.flatnonzero(bad.any(axis=0))
    shown = ", ".join(str(t) for t in trs[:5]) + (" ..." if trs.size > 5 else "")
    return (f"{where}: {int(bad.sum())} NaN/Inf values in {trs.size} TRs (TR {shown}) and {verts.size} vertices "
            f"(first: {verts[0]})")


def _interpolate(a: np.ndarray, cortex: np.ndarray) -> np.ndarray:
    a = a.copy()
    t = np.arange(a.shape[0])
    for v in np.flatnonzero((~np.isfinite(a)).any(axis=0) & cortex):
        ok = np.isfinite(a[:, v])
        a[:, v] = np.interp(t, t[ok], a[ok, v]) if ok.any() else 0.0
    return a


def _load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, or a one-line error saying why the file is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise StudyError(f"{path}: unreadable ({e.strerror or e})") from None
    if head != b"\x93NUMPY":
        raise StudyError(f"{path}: not a NumPy .npy array (it starts with {head!r}; write it with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise StudyError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None


def zscore_runs(fmri: np.ndarray) -> np.ndarray:
    """Per-vertex z-scores over time; a constant vertex becomes 0."""
    mean = fmri.mean(axis=0, keepdims=True)
    std = fmri.std(axis=0, keepdims=True)
    return np.where(std > 0, (fmri - mean) / np.where(std > 0, std, 1.0), 0.0).astype(np.float32)


Detrend = Literal["linear", "polynomial", "cosine"]


def drift_regressors(times_s: np.ndarray, kind: Detrend, *, order: int = 2, high_pass_hz: float = 0.01,
                     tr_s: float | None = None, grid: tuple[float, int] | None = None) -> np.ndarray:
    """(n, K) drift regressors of one run, a constant among them (nilearn's ``drift_model`` conventions).

    - ``linear``: constant and time; ``polynomial``: powers of time up to ``order``;
    - ``cosine``: the DCT-II basis of periods longer than ``1 / high_pass_hz`` on the run's full grid
      of ``n`` samples from ``t_0`` every ``dt`` (the TR): ``K - 1 = floor(2 n dt high_pass_hz)`` cosines
      ``cos(pi k (t - t_0 + dt / 2) / (n dt))``. ``grid = (t_0, n)`` is the full grid of a run whose
      TRs were dropped (default: the span of ``times_s``), so it keeps the basis it had.
    """
    t = np.asarray(times_s, np.float64)
    n = t.shape[0]
    if kind in ("linear", "polynomial"):
        if kind == "polynomial" and order < 1:
            raise ValueError(f"polynomial detrending needs order >= 1, got {order}")
        u = (t - t[0]) / max(t[-1] - t[0], 1e-9) * 2 - 1          # [-1, 1]: Legendre polynomials stay well conditioned
        return np.polynomial.legendre.legvander(u, 1 if kind == "linear" else order)
    if kind == "cosine":
        if high_pass_hz <= 0:
            raise ValueError(f"cosine detrending needs high_pass_hz > 0, got {high_pass_hz}")
        dt = tr_s if tr_s else (t[-1] - t[0]) / max(n - 1, 1)
        t_first, n_grid = grid if grid is not None else (t[0], int(round((t[-1] - t[0]) / dt)) + 1)
        order = min(n_grid - 1, int(np.floor(2 * n_grid * high_pass_hz * dt)))
        k = np.arange(1, order + 1)
        cos = np.cos(np.pi * np.outer(t - t_first + dt / 2, k) / (n_grid * dt))
        return np.column_stack([cos, np.ones(n)])
    raise ValueError(f"detrend must be 'linear', 'polynomial' or 'cosine', got {kind!r}")


def detrend_run(fmri: np.ndarray, times_s: np.ndarray, kind: Detrend, **kwargs) -> np.ndarray:
    """``fmri`` (n, V) minus its least-squares fit on :func:`drift_regressors` (the run's mean included)."""
    X = drift_regressors(times_s, kind, **kwargs)
    y = fmri.astype(np.float64)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return (y - X @ beta).astype(np.float32)


def load_study(root: str | Path, *, zscore: bool = True, nan_policy: Literal["error", "drop", "interpolate"] = "error",
               length_tolerance_s: float = 20.0, missing_runs: Literal["warn", "error"] = "warn",
               teacher: bool = True, subjects: list[str] | None = None, detrend: Detrend | None = None,
               detrend_order: int = 2, high_pass_hz: float = 0.01, teacher_zscore: bool = True,
               lazy: bool = False) -> LoadedStudy:
    """Load and validate a study folder (see the module docstring).

    Args:
        root: the folder holding ``study.json``.
        zscore: z-score each run per vertex over time (medial wall stays 0), after any detrending.
        detrend: remove slow drifts from each run first: ``"linear"``, ``"polynomial"`` (up to
            ``detrend_order``) or ``"cosine"`` (periods longer than ``1 / high_pass_hz`` s); None: keep.
        nan_policy: what to do with NaN/Inf in cortex: refuse, drop those TRs, or interpolate.
        length_tolerance_s: how far a run's BOLD span may differ from its stimulus's duration.
        missing_runs: a run whose fMRI file is missing: skip it with a warning, or refuse.
        teacher: load (and stitch) the stimuli's teacher chunks.
        teacher_zscore: z-score the teacher's predictions per stimulus and output (as runs are), so that a
            loss against the teacher and one against fMRI are on the same scale; False keeps its units.
        lazy: keep feature and teacher arrays on disk and read them window by window
            (:mod:`tinytribe.data.lazy`), for corpora larger than memory; fMRI runs are still loaded.
        subjects: load only these subjects.
    """
    if nan_policy not in ("error", "drop", "interpolate"):
        raise ValueError(f"nan_policy must be 'error', 'drop' or 'interpolate', got {nan_policy!r}")
    if detrend not in (None, "linear", "polynomial", "cosine"):
        raise ValueError(f"detrend must be None, 'linear', 'polynomial' or 'cosine', got {detrend!r}")
    root = Path(root)
    try:
        study = Study.load(root)
    except (FormatError, ValueError, TypeError) as e:
        raise StudyError(str(e).splitlines()[0]) from None
    n_out = study.n_outputs
    notes: list[str] = []

    def warn(msg: str) -> None:
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)

    medial = np.zeros(n_out, bool)
    if study.medial_wall:
        path = root / study.medial_wall
        if not path.is_file():
            raise StudyError(f"{path}: medial-wall mask missing")
        medial = np.load(path).astype(bool)
        if medial.shape != (n_out,):
            raise StudyError(f"{path}: medial-wall mask has shape {medial.shape}, expected ({n_out},) for {study.space}")
    cortex = ~medial

    stimuli: dict[str, StimulusData] = {}
    for sid, st in study.stimuli.items():
        fpath = root / st.features
        if not fpath.is_file():
            raise StudyError(f"{fpath}: features of stimulus {sid!r} missing (run the feature extraction)")
        try:
            if lazy:
                from tinytribe.data.lazy import LazyFeatures

                fc = LazyFeatures(fpath)
            else:
                fc = FeatureCache.load(fpath)
        except FormatError as e:
            raise StudyError(str(e).splitlines()[0]) from None
        modalities = st.modalities if st.modalities is not None else [m for m in MODALITIES if m in fc.features
                                                                      and fc.masks[m].any()]
        lacking = [m for m in modalities if m not in fc.features]
        if lacking:
            raise StudyError(f"{fpath}: no {lacking[0]} features, but study.json lists {lacking[0]!r} among the "
                             f"modalities of {sid!r} (re-extract, or list only {', '.join(fc.features)})")
        tc = None
        paths = [root / rel for rel in st.teacher] if teacher else []
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise StudyError(f"{missing[0]}: teacher chunk of stimulus {sid!r} missing")
        if paths and lazy:
            from tinytribe.data.lazy import LazyTeacher

            try:
                tc = LazyTeacher(paths, zscore=teacher_zscore)
            except (FormatError, ValueError) as e:
                raise StudyError(str(e).splitlines()[0]) from None
        elif paths:
            from tinytribe.teacher.cache import stitch_chunks

            try:
                tc = stitch_chunks([TeacherChunk.load(p) for p in paths])
            except FormatError as e:
                raise StudyError(str(e).splitlines()[0]) from None
            if teacher_zscore:   # per stimulus and output, as fMRI runs are per run: MSE against either means the same
                tc.predictions = zscore_runs(tc.predictions.astype(np.float32))
        stimuli[sid] = StimulusData(sid, st.duration_s, fc, modalities, tc)

    runs: list[RunData] = []
    for r in study.runs:
        if subjects is not None and r.subject not in subjects:
            continue
        path = root / r.fmri
        if not path.is_file():
            msg = f"{path}: fMRI run of {r.subject} on {r.stimulus} missing; run skipped"
            if missing_runs == "error":
                raise StudyError(msg.replace("; run skipped", ""))
            warn(msg)
            continue
        a = _load_npy(path)
        if a.ndim != 2 or a.shape[1] != n_out:
            raise StudyError(f"{path}: shape {a.shape}, expected (n_TR, {n_out}) for {study.space}")
        a = a.astype(np.float32)
        a[:, medial] = 0.0
        if r.bold_times:
            times = _load_npy(root / r.bold_times).astype(np.float64)
            if times.shape != (a.shape[0],):
                raise StudyError(f"{root / r.bold_times}: {times.shape[0]} BOLD times for {a.shape[0]} TRs in {path}")
        else:
            times = r.first_bold_s + np.arange(a.shape[0]) * r.tr_s
        if times.size > 1 and not np.all(np.diff(times) > 0):
            raise StudyError(f"{path}: BOLD times do not increase")
        tr = r.tr_s if r.tr_s else float(np.median(np.diff(times)))
        full_grid = (float(times[0]), int(times.size))
        problem = _bad_values(a, str(path), cortex)
        if problem:
            if nan_policy == "error":
                raise StudyError(f"{problem}; load with nan_policy='drop' or 'interpolate'")
            if nan_policy == "drop":
                keep = np.isfinite(a[:, cortex]).all(axis=1)
                a, times = a[keep], times[keep]
                warn(f"{problem}: dropped {int((~keep).sum())} TRs")
            else:
                a = _interpolate(a, cortex)
                warn(f"{problem}: interpolated")
        duration = study.stimuli[r.stimulus].duration_s
        end = times[-1] + tr
        if abs(end - duration) > length_tolerance_s:
            how = "longer" if end > duration else "shorter"
            raise StudyError(f"{path}: {a.shape[0]} TRs cover {end:.1f} s of BOLD, the stimulus {r.stimulus!r} "
                             f"lasts {duration:.1f} s: {abs(end - duration):.1f} s {how}, beyond the "
                             f"{length_tolerance_s:g} s tolerance")
        if detrend:
            a = detrend_run(a, times, detrend, order=detrend_order, high_pass_hz=high_pass_hz, tr_s=tr, grid=full_grid)
        if zscore:  # over the whole run, held-out parts included (common practice; each run is its own scale)
            a = zscore_runs(a)
        a[:, medial] = 0.0
        runs.append(RunData(r.subject, study.subjects.index(r.subject), r.stimulus, r.repeat, a, times, tr, path))
    for s in subjects or study.subjects:
        if not any(run.subject == s for run in runs):
            warn(f"{root}: subject {s} has no run left")
    loaded = LoadedStudy(root, study, runs, stimuli, medial, notes)
    for name, parts in study.splits.items():   # a time range that holds no sample is a typo, not a split
        for part in parts:
            sid = part if isinstance(part, str) else part.stimulus
            if not isinstance(part, str) and any(r.stimulus == sid for r in runs) and not len(loaded.select([part])):
                warn(f"{root / 'study.json'}: split {name!r} part {part} holds no BOLD sample of any run")
    return loaded


def in_space(study: LoadedStudy, space: str) -> LoadedStudy:
    """A copy of ``study`` whose fMRI runs are reduced to the coarser ``space``
    (:func:`tinytribe.spaces.reduce_space`: fsaverage4 vertices averaged into Schaefer parcels, ...),
    to score a model that predicts that space. A parcel of medial wall only is the copy's medial wall; the copy
    has no teacher (its outputs stay in the study's space) and shares the features."""
    import dataclasses

    from tinytribe.spaces import reduce_space

    if space == study.study.space:
        return study
    runs = [dataclasses.replace(r, fmri=reduce_space(r.fmri, study.study.space, space).astype(np.float32))
            for r in study.runs]   # medial-wall vertices are 0: they scale a parcel's mean, not its r
    medial = reduce_space(study.cortex.astype(np.float32)[None], study.study.space, space)[0] == 0
    return dataclasses.replace(
        study, study=dataclasses.replace(study.study, space=space, output_names=None), runs=runs, medial_wall=medial,
        stimuli={k: dataclasses.replace(s, teacher=None) for k, s in study.stimuli.items()})
