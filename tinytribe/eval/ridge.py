"""The ridge baseline: a banded ridge encoding model on the same cached features.

One band per modality (text, audio, video), each feature averaged onto the run's TR grid (the mean
over ``[tau, tau + TR)``, as the student does) and delayed by every whole TR from 0 to ``max_delay_s``
(finite impulse response: the ridge learns its own HRF). himalaya's ``MultipleKernelRidgeCV`` fits,
per subject, one regularisation per band and target by random search, cross-validated across runs
(leave-runs-out folds). It runs on the GPU (``torch_cuda`` backend) when one is available.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from tinytribe.data.study import LoadedStudy
from tinytribe.formats import MODALITIES
from tinytribe.grids import overlap


@dataclass
class RidgeConfig:
    max_delay_s: float = 10.0
    n_iter: int = 20                  # random-search iterations over band weightings
    alphas: tuple[float, ...] = tuple(np.logspace(-2, 8, 21))
    n_folds: int = 3                  # folds over runs
    seed: int = 0
    backend: str = "auto"             # "auto": torch_cuda when CUDA is available, else numpy


def delays_for(tr_s: float, max_delay_s: float) -> list[int]:
    """Delays in TRs: every k with k * TR <= max_delay_s."""
    return list(range(int(np.floor(max_delay_s / tr_s + 1e-9)) + 1))


def tr_features(study: LoadedStudy, run_index: int) -> dict[str, np.ndarray]:
    """Each modality's features averaged onto the run's TR grid: {m: (n_TR, D)} (0 without content)."""
    run = study.runs[run_index]
    fc = study.stimuli[run.stimulus].features
    starts = fc.t0_s + np.arange(fc.n_steps) / fc.rate_hz
    w = overlap(starts, 1.0 / fc.rate_hz, run.bold_times_s, run.tr_s) / run.tr_s  # (n_TR, T): share of each TR
    out = {}
    for m in MODALITIES:
        x = fc.features[m].astype(np.float64) * fc.masks[m][:, None]
        out[m] = w @ x
    return out


def delayed(x: np.ndarray, delays: list[int]) -> np.ndarray:
    """[x(t - d) for d in delays] side by side, zeros before the start: (n, D * len(delays))."""
    out = np.zeros((x.shape[0], x.shape[1] * len(delays)))
    for j, d in enumerate(delays):
        out[d:, j * x.shape[1]:(j + 1) * x.shape[1]] = x[: x.shape[0] - d] if d else x
    return out


def design(study: LoadedStudy, run_index: int, delays: list[int]) -> tuple[np.ndarray, list[slice]]:
    """The delayed design matrix of one run and the column slice of each modality's band."""
    feats = tr_features(study, run_index)
    blocks, slices, at = [], [], 0
    for m in MODALITIES:
        b = delayed(feats[m], delays)
        blocks.append(b)
        slices.append(slice(at, at + b.shape[1]))
        at += b.shape[1]
    return np.concatenate(blocks, axis=1), slices


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
    predictions: dict[int, np.ndarray]        # run index -> (n_TR, V)
    split_predictions: dict[int, np.ndarray]  # run index -> (3, n_TR, V), one per band
    backend: str
    delays_s: list[float]


def _folds(groups: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    runs = np.unique(groups)
    k = max(2, min(n_folds, runs.size))
    return [(np.flatnonzero(~np.isin(groups, runs[i::k])), np.flatnonzero(np.isin(groups, runs[i::k])))
            for i in range(k)]


def fit_predict(study: LoadedStudy, train_runs: list[int], test_runs: list[int],
                config: RidgeConfig | None = None) -> RidgeResult:
    """Fit the banded ridge per subject on ``train_runs`` and predict ``test_runs``."""
    from himalaya.kernel_ridge import ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    config = config or RidgeConfig()
    preds, splits = {}, {}
    with _backend(config.backend) as backend:
        from himalaya.backend import get_backend

        bk = get_backend()
        for s in sorted({study.runs[i].subject for i in test_runs}):
            train = [i for i in train_runs if study.runs[i].subject == s]
            test = [i for i in test_runs if study.runs[i].subject == s]
            if not train:
                raise ValueError(f"ridge: subject {s} has test runs but no training run")
            delays = delays_for(study.runs[train[0]].tr_s, config.max_delay_s)
            xs = [design(study, i, delays) for i in train]
            slices = xs[0][1]
            X = np.concatenate([x for x, _ in xs])
            Y = np.concatenate([study.runs[i].fmri for i in train]).astype(np.float64)
            groups = np.concatenate([np.full(study.runs[i].fmri.shape[0], i) for i in train])
            kernelizer = ColumnKernelizer([(m, Kernelizer(kernel="linear"), sl) for m, sl in zip(MODALITIES, slices)])
            model = MultipleKernelRidgeCV(
                kernels="precomputed", cv=_folds(groups, config.n_folds), random_state=config.seed,
                solver_params={"n_iter": config.n_iter, "alphas": np.asarray(config.alphas), "progress_bar": False})
            pipe = make_pipeline(StandardScaler(with_mean=True, with_std=False), kernelizer, model)
            pipe.fit(X, Y)
            for i in test:
                Xt, _ = design(study, i, delays)
                preds[i] = np.asarray(bk.to_numpy(pipe.predict(Xt)), np.float32)
                kt = pipe[:-1].transform(Xt)
                splits[i] = np.asarray(bk.to_numpy(pipe[-1].predict(kt, split=True)), np.float32)
        tr = study.runs[test_runs[0]].tr_s if test_runs else 1.0
    return RidgeResult(preds, splits, backend, [d * tr for d in delays_for(tr, config.max_delay_s)])
