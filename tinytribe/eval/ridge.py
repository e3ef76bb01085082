"""The ridge baseline: a banded ridge encoding model on the same cached features, and classic low-level bands.

Bands, each its own regularisation (himalaya's ``MultipleKernelRidgeCV``, random search over band
weightings, cross-validated):

- ``text``, ``audio``, ``video``: the cached features of the stimuli's modalities (the default bands
  are the modalities the stimuli have), each averaged onto the run's TR grid (the mean over
  ``[tau, tau + TR)``, as the student does);
- ``word_rate``: word onsets per second in each TR, from the stimulus's ``words`` transcript, or
  without one from the words its feature cache keeps (its transcript's or the recogniser's);
- ``audio_envelope``: the RMS level of the sound in each TR, from the stimulus's ``media`` file.

Every band is delayed by every whole TR from 0 to ``max_delay_s`` (finite impulse response: the ridge
learns its own HRF). Delays are built on the whole run and then the split's samples are taken, so a
held-out part of a run has the history of the part before it (no zeros at a split boundary).

Fits:

- ``pooling="subject"``: one model per subject. Subjects whose training samples come from the same
  stimuli on the same grids share one design matrix and one kernel computation; their targets are
  fitted side by side (the random search treats every target on its own, so this equals separate fits).
- ``pooling="mean"``: one model on the group mean of the training runs (every subject and repeat of a
  stimulus averaged; one per TR when runs differ in TR), predicting every subject's test runs. On
  stimuli every subject saw, the stacked subjects' squared loss is S times the mean's plus a constant,
  so the mean's fit is the stacked fit at an S-times larger penalty (cross-validation then chooses
  penalties on the mean, not on single subjects).

Cross-validation leaves stimuli out; when there are fewer training stimuli than folds, contiguous
blocks of each stimulus's samples are the groups. Training and test samples of one stimulus at the same
time are refused (:func:`check_no_overlap`). Memory: ``max_fit_bytes`` bounds the targets fitted at once;
the kernels add ``n_bands * n_train^2`` doubles. It runs on the GPU (``torch_cuda``) when one exists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tinytribe.data.splits import Selection, as_selection
from tinytribe.data.study import LoadedStudy, time_keys
from tinytribe.formats import MODALITIES
from tinytribe.grids import overlap

LOW_LEVEL_BANDS = ("word_rate", "audio_envelope")
BANDS = MODALITIES + LOW_LEVEL_BANDS
ENVELOPE_HZ = 10.0


class BandError(ValueError):
    """A band the study cannot provide; the message names the stimulus and what it lacks."""


@dataclass
class RidgeConfig:
    bands: tuple[str, ...] | None = None   # None: the modalities the stimuli have
    pooling: Literal["subject", "mean"] = "subject"
    max_delay_s: float = 10.0
    n_iter: int = 20                  # random-search iterations over band weightings
    alphas: tuple[float, ...] = tuple(np.logspace(-2, 8, 21))
    n_folds: int = 3                  # folds over stimuli (or contiguous blocks of them)
    seed: int = 0
    backend: str = "auto"             # "auto": torch_cuda when CUDA is available, else numpy
    max_fit_bytes: float = 2e9        # memory for the targets fitted together (subjects side by side)

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands or () if b not in BANDS]
        if unknown:
            raise ValueError(f"unknown ridge band {unknown[0]!r} (known: {', '.join(BANDS)})")
        if self.pooling not in ("subject", "mean"):
            raise ValueError(f"ridge pooling must be 'subject' or 'mean', got {self.pooling!r}")


def delays_for(tr_s: float, max_delay_s: float) -> list[int]:
    """Delays in TRs: every k with k * TR <= max_delay_s."""
    return list(range(int(np.floor(max_delay_s / tr_s + 1e-9)) + 1))


def default_bands(study: LoadedStudy, runs: Iterable[int]) -> tuple[str, ...]:
    """The modalities any stimulus of ``runs`` has (in ``MODALITIES`` order)."""
    have = {m for i in runs for m in study.stimuli[study.runs[i].stimulus].modalities}
    return tuple(m for m in MODALITIES if m in have)


def band_problems(study: LoadedStudy, runs: Iterable[int], bands: Iterable[str]) -> dict[str, str]:
    """Why each band in ``bands`` cannot be made for ``runs`` (bands that can are absent)."""
    out = {}
    stimuli = sorted({study.runs[i].stimulus for i in runs})
    for band in bands:
        if band in MODALITIES:
            if not any(band in study.stimuli[s].modalities for s in stimuli):
                out[band] = f"no stimulus among {', '.join(stimuli)} has {band}"
            continue
        need, key = ("text", "words") if band == "word_rate" else ("audio", "media")
        if not any(need in study.stimuli[s].modalities for s in stimuli):
            out[band] = f"no stimulus among {', '.join(stimuli)} has {need}"
            continue
        for s in stimuli:
            rel = getattr(study.study.stimuli[s], key)
            if band == "audio_envelope" and need in study.stimuli[s].modalities and not rel:
                out[band] = f"stimulus {s!r} has {need} but no {key!r} file in study.json"
            elif rel and not (study.root / rel).is_file():
                out[band] = f"{study.root / rel}: {key} file of stimulus {s!r} missing"
            else:
                continue
            break
    return out


def delayed(x: np.ndarray, delays: list[int]) -> np.ndarray:
    """[x(t - d) for d in delays] side by side, zeros before the start: (n, D * len(delays))."""
    out = np.zeros((x.shape[0], x.shape[1] * len(delays)))
    for j, d in enumerate(delays):
        out[d:, j * x.shape[1]:(j + 1) * x.shape[1]] = x[: x.shape[0] - d] if d else x
    return out


class Designs:
    """Delayed design matrices of a study's runs, each built once per stimulus and BOLD grid.

    Args:
        study: the loaded study.
        bands: band names (see the module docstring).
        max_delay_s: FIR delays from 0 to this, every TR.
    """

    def __init__(self, study: LoadedStudy, bands: tuple[str, ...], max_delay_s: float):
        self.study, self.bands, self.max_delay_s = study, tuple(bands), max_delay_s
        self.dims = {m: next((s.features.features[m].shape[1] for s in study.stimuli.values()
                              if m in s.features.features), 0) for m in MODALITIES}
        self._matrices: dict[tuple, tuple[np.ndarray, list[slice]]] = {}
        self._envelopes: dict[str, np.ndarray] = {}

    def key(self, run_index: int) -> tuple:
        run = self.study.runs[run_index]
        return run.stimulus, round(run.tr_s, 9), run.bold_times_s.tobytes()

    def band_values(self, run_index: int, times_s: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each band's values on the run's TR grid (or on samples at ``times_s``, each one TR long)
        before delays: {band: (n, D)} (0 without content)."""
        run = self.study.runs[run_index]
        tau = run.bold_times_s if times_s is None else np.asarray(times_s, np.float64)
        stim = self.study.stimuli[run.stimulus]
        fc = stim.features
        w = overlap(fc.times(), 1.0 / fc.rate_hz, tau, run.tr_s) / run.tr_s  # (n, T): share of each sample
        out = {}
        for band in self.bands:
            if band in MODALITIES:
                if band in stim.modalities and band in fc.features:
                    out[band] = w @ (fc.features[band].astype(np.float64) * fc.masks[band][:, None])
                else:
                    out[band] = np.zeros((tau.size, self.dims[band]))
            elif band == "word_rate":
                out[band] = self._word_rate(run, tau)
            else:
                out[band] = self._envelope(run, tau)
        return out

    def _word_rate(self, run, tau: np.ndarray) -> np.ndarray:
        from tinytribe.features.words import read_transcript

        spec = self.study.study.stimuli[run.stimulus]
        if "text" not in self.study.stimuli[run.stimulus].modalities:
            return np.zeros((tau.size, 1))
        if spec.words:
            onsets = np.array([w.onset for w in read_transcript(self.study.root / spec.words)])
        else:  # the words the feature cache keeps (its transcript's or the recogniser's)
            onsets = np.array([w.onset for w in self.study.stimuli[run.stimulus].features.words])
        lo = np.searchsorted(onsets, tau, side="left")
        hi = np.searchsorted(onsets, tau + run.tr_s, side="left")
        return ((hi - lo) / run.tr_s)[:, None].astype(np.float64)  # onsets in [tau, tau + TR), per second

    def _envelope(self, run, tau: np.ndarray) -> np.ndarray:
        from tinytribe.features.decode import audio_rms

        spec = self.study.study.stimuli[run.stimulus]
        if not spec.media or "audio" not in self.study.stimuli[run.stimulus].modalities:
            return np.zeros((tau.size, 1))
        if run.stimulus not in self._envelopes:
            rms = audio_rms(self.study.root / spec.media, 0.0, spec.duration_s, ENVELOPE_HZ)
            self._envelopes[run.stimulus] = np.nan_to_num(rms.astype(np.float64))
        rms = self._envelopes[run.stimulus]
        w = overlap(np.arange(rms.size) / ENVELOPE_HZ, 1.0 / ENVELOPE_HZ, tau, run.tr_s) / run.tr_s
        return (w @ rms)[:, None]

    def matrix(self, run_index: int) -> tuple[np.ndarray, list[slice]]:
        """The delayed design matrix of one whole run, (n_TR, columns), and each band's column slice.

        Delays are whole TRs of the run's nominal grid ``tau_0 + k TR``: a run whose TRs were dropped
        (``nan_policy="drop"``) gets its design built on the full grid and then its kept rows, so that
        lag d is always d TRs earlier."""
        run = self.study.runs[run_index]
        k = self.key(run_index)
        if k not in self._matrices:
            delays = delays_for(run.tr_s, self.max_delay_s)
            tau = run.bold_times_s
            rows = np.round((tau - tau[0]) / run.tr_s).astype(int)
            grid = tau[0] + np.arange(rows[-1] + 1) * run.tr_s
            if np.abs(grid[rows] - tau).max() > 0.25 * run.tr_s:   # not a TR grid: delay by samples
                rows, grid = np.arange(tau.size), tau
            values = self.band_values(run_index, grid)
            blocks = [delayed(values[b], delays)[rows] for b in self.bands]
            edges = np.cumsum([0] + [b.shape[1] for b in blocks])
            self._matrices[k] = (np.concatenate(blocks, axis=1),
                                 [slice(int(a), int(b)) for a, b in zip(edges, edges[1:])])
        return self._matrices[k]

    def clear(self) -> None:
        """Forget the cached design matrices (they are rebuilt when asked for again)."""
        self._matrices.clear()


@contextlib.contextmanager
def _backend(name: str):
    from himalaya.backend import get_backend, set_backend

    if name == "auto":
        import torch

        name = "torch_cuda" if torch.cuda.is_available() else "numpy"
    previous = get_backend().name
    set_backend(name, on_error="raise")
    try:
        yield name
    finally:
        set_backend(previous)


@dataclass
class RidgeResult:
    predictions: dict[int, np.ndarray]        # run index -> (n_TR, V), the whole run
    split_predictions: dict[int, np.ndarray]  # run index -> (n_bands, n_TR, V), one per band
    backend: str
    delays_s: list[float]
    bands: tuple[str, ...] = MODALITIES
    pooling: str = "subject"


def _cv_groups(study: LoadedStudy, rows: list[int], train: Selection, n_folds: int) -> np.ndarray:
    """A group label per training sample: its stimulus, or (stimulus, contiguous block) when there are
    fewer stimuli than folds, so that no stimulus (or stretch of one) is in training and validation."""
    stimuli = list(dict.fromkeys(study.runs[i].stimulus for i in rows))
    by_block = len(stimuli) < n_folds
    out = []
    for i in rows:
        n = int(train.mask(i).sum())
        s = stimuli.index(study.runs[i].stimulus)
        block = (np.arange(n) * n_folds // max(n, 1)) if by_block else np.zeros(n, int)
        out.append(s * n_folds + block)
    return np.concatenate(out)


def _folds(groups: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    labels = np.unique(groups)
    k = max(2, min(n_folds, labels.size))
    if labels.size < 2:
        raise ValueError("ridge: cross-validation needs training samples from at least two stimuli or blocks")
    return [(np.flatnonzero(~np.isin(groups, labels[i::k])), np.flatnonzero(np.isin(groups, labels[i::k])))
            for i in range(k)]


@dataclass
class _Fit:
    """One design matrix and the targets fitted on it: ``targets[s]`` is subject ``s``'s (n, V) data
    (or the group mean under the name ``"mean"``), ``rows`` the training runs behind the design, all
    with TR ``tr_s``."""

    rows: list[int]
    targets: dict[str, np.ndarray]
    tr_s: float


def _fits(study: LoadedStudy, designs: Designs, train: Selection, subjects: list[str], pooling: str) -> list[_Fit]:
    if pooling == "mean":   # one fit per TR, on the mean of the runs on each (stimulus, grid)
        by_key: dict[tuple, list[int]] = {}
        for i in train:
            by_key.setdefault((designs.key(i), train.mask(i).tobytes()), []).append(i)
        fits = []
        for tr in sorted({round(study.runs[i].tr_s, 6) for i in train}):
            groups = [g for g in by_key.values() if round(study.runs[g[0]].tr_s, 6) == tr]
            mean = np.concatenate([np.mean([study.runs[i].fmri[train.mask(i)] for i in g], axis=0) for g in groups])
            fits.append(_Fit([g[0] for g in groups], {"mean": mean}, study.runs[groups[0][0]].tr_s))
        return fits
    groups: dict[tuple, _Fit] = {}
    for s in subjects:
        rows = [i for i in train if study.runs[i].subject == s]
        if not rows:
            raise ValueError(f"ridge: subject {s} has test runs but no training run")
        trs = sorted({round(study.runs[i].tr_s, 6) for i in rows})
        if len(trs) > 1:
            raise ValueError(f"ridge: {s}'s training runs have TRs {', '.join(f'{t:g}' for t in trs)} s; "
                             f"fit each TR separately")
        sig = tuple((designs.key(i), train.mask(i).tobytes()) for i in rows)
        fit = groups.setdefault(sig, _Fit(rows, {}, study.runs[rows[0]].tr_s))
        fit.targets[s] = np.concatenate([study.runs[i].fmri[train.mask(i)] for i in rows])
    return list(groups.values())


def check_no_overlap(study: LoadedStudy, train: Selection, test: Selection) -> None:
    """Refuse training and test samples of the same stimulus at the same time (any run, any subject):
    a model fitted on them has seen the test stimulus's responses.

    Raises:
        ValueError: naming the stimulus, a test run and how many of its samples are in training.
    """
    def keys(i: int, mask: np.ndarray) -> set[int]:
        return set(time_keys(study.runs[i].bold_times_s[mask]))

    seen: dict[str, set[int]] = {}
    for i in train:
        seen.setdefault(study.runs[i].stimulus, set()).update(keys(i, train.mask(i)))
    for i in test:
        run = study.runs[i]
        shared = keys(i, test.mask(i)) & seen.get(run.stimulus, set())
        if shared:
            raise ValueError(f"ridge: training and test samples overlap: {len(shared)} test samples of "
                             f"{run.subject}/{run.stimulus} (from {min(shared) / 1e3:g} s) are at times the training "
                             f"samples of {run.stimulus!r} cover; split by stimulus or by time "
                             f"(tinytribe.data.splits)")


def fit_predict(study: LoadedStudy, train_runs: Selection | Iterable[int], test_runs: Selection | Iterable[int],
                config: RidgeConfig | None = None) -> RidgeResult:
    """Fit the banded ridge on the training samples and predict the test runs (whole runs: scoring
    takes the test samples).

    Args:
        train_runs, test_runs: :class:`~tinytribe.data.splits.Selection` s or run indices (whole runs).
    """
    from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = config or RidgeConfig()
    train, test = as_selection(study, train_runs), as_selection(study, test_runs)
    if not len(train):
        raise ValueError("ridge: no training samples")
    check_no_overlap(study, train, test)
    bands = tuple(config.bands or default_bands(study, [*train, *test]))
    problems = band_problems(study, [*train, *test], bands)
    if problems:
        band, why = next(iter(problems.items()))
        raise BandError(f"ridge band {band}: {why}")
    designs = Designs(study, bands, config.max_delay_s)
    subjects = sorted({study.runs[i].subject for i in test}, key=study.subjects.index)
    preds, splits = {}, {}
    with _backend(config.backend) as backend:
        from himalaya.backend import get_backend

        bk = get_backend()
        for fit in _fits(study, designs, train, subjects, config.pooling):
            slices = designs.matrix(fit.rows[0])[1]
            X = np.concatenate([designs.matrix(i)[0][train.mask(i)] for i in fit.rows])
            groups = _cv_groups(study, fit.rows, train, config.n_folds)
            kernelizer = ColumnKernelizer([(b, Kernelizer(kernel="linear"), sl) for b, sl in zip(bands, slices)])
            prep = make_pipeline(StandardScaler(with_mean=True, with_std=False), kernelizer)
            K = prep.fit_transform(X)
            del X
            designs.clear()                       # the training designs are in K now; test designs come next
            test_of = {name: [i for i in test if (study.runs[i].subject == name if config.pooling == "subject"
                                                  else round(study.runs[i].tr_s, 6) == round(fit.tr_s, 6))]
                       for name in fit.targets}
            odd = [i for runs_ in test_of.values() for i in runs_ if abs(study.runs[i].tr_s - fit.tr_s) > 1e-6]
            if odd:
                r = study.runs[odd[0]]
                raise ValueError(f"ridge: test run {r.subject}/{r.stimulus} has TR {r.tr_s:g} s, its training runs "
                                 f"{fit.tr_s:g} s")
            kt_cache = {}
            names = list(fit.targets)
            V = study.study.n_outputs
            per_chunk = max(1, int(config.max_fit_bytes // (8 * K.shape[-1] * V)))
            for c in range(0, len(names), per_chunk):
                chunk = names[c:c + per_chunk]
                model = MultipleKernelRidgeCV(
                    kernels="precomputed", cv=_folds(groups, config.n_folds), random_state=config.seed,
                    solver_params={"n_iter": config.n_iter, "alphas": np.asarray(config.alphas),
                                   "progress_bar": False})
                model.fit(K, np.concatenate([fit.targets[n] for n in chunk], axis=1).astype(np.float64))
                for k, name in enumerate(chunk):
                    cols = slice(k * V, (k + 1) * V)
                    for i in test_of[name]:
                        key = designs.key(i)
                        if key not in kt_cache:
                            kt = prep.transform(designs.matrix(i)[0])
                            kt_cache[key] = (np.asarray(bk.to_numpy(model.predict(kt))),
                                             np.asarray(bk.to_numpy(model.predict(kt, split=True))))
                        full, split = kt_cache[key]
                        preds[i] = full[:, cols].astype(np.float32)
                        splits[i] = split[:, :, cols].astype(np.float32)
                kt_cache.clear()
            designs.clear()
        missing = [i for i in test if i not in preds]
        if missing:
            raise ValueError(f"ridge: no prediction for run {missing[0]}")
    tr = study.runs[next(iter(test))].tr_s if len(test) else 1.0
    return RidgeResult(preds, splits, backend, [d * tr for d in delays_for(tr, config.max_delay_s)], bands,
                       config.pooling)
