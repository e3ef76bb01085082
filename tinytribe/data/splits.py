"""Which BOLD samples of which runs a split holds, and contiguous folds over time.

A split (``study.json`` ``splits``, docs/FORMATS.md §4) lists *parts*: a stimulus id (every sample of
every run of it) or a time range ``{"stimulus", "start_s", "end_s"}`` of a stimulus, applied to every
run of it. A BOLD sample belongs to a range when its time ``tau`` (the start of the interval it covers,
in stimulus seconds) lies in ``[start_s, end_s)``.

A :class:`Selection` is what a split resolves to: run index -> a boolean mask over the run's samples.
It iterates over run indices, so code that only needs runs can treat it as a list of them.

    sel = study.split("test")                    # Selection
    for fold in time_folds(study, 5):            # {"train": [...], "test": [...]} split parts
        train, test = study.select(fold["train"]), study.select(fold["test"])

Between a fold's training and test samples :func:`time_folds` leaves a gap (3 TRs by default), so
that slow haemodynamics and autocorrelated noise do not carry signal from one side to the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tinytribe.formats import SplitPart, SplitRange

if TYPE_CHECKING:
    from tinytribe.data.study import LoadedStudy

EPS = 1e-6


@dataclass(frozen=True, eq=False)
class Selection:
    """BOLD samples of a study's runs: ``masks[run index]`` is a (n_TR,) bool mask, True = selected.

    Only runs with at least one selected sample are present, in increasing run order.
    """

    masks: dict[int, np.ndarray]

    def __iter__(self) -> Iterator[int]:
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def __contains__(self, run: object) -> bool:
        return run in self.masks

    @property
    def runs(self) -> list[int]:
        return list(self.masks)

    def mask(self, run: int) -> np.ndarray:
        return self.masks[run]

    def n_samples(self) -> int:
        return int(sum(m.sum() for m in self.masks.values()))

    def subset(self, runs: Iterable[int]) -> "Selection":
        """The same samples of only these runs (e.g. one subject's: ``sel.subset(i for i in sel if ...)``)."""
        keep = set(runs)
        return Selection({i: m for i, m in self.masks.items() if i in keep})


def as_selection(study: "LoadedStudy", runs: "Selection | Iterable[int] | None") -> Selection:
    """A :class:`Selection` from a selection (unchanged), run indices (whole runs) or None (every run)."""
    if isinstance(runs, Selection):
        return runs
    ids = range(len(study.runs)) if runs is None else runs
    return Selection({i: np.ones(study.runs[i].fmri.shape[0], bool) for i in sorted(set(ids))})


def sample_mask(parts: list[SplitPart], stimulus: str, bold_times_s: np.ndarray) -> np.ndarray:
    """(n_TR,) bool: the samples of a run of ``stimulus`` that ``parts`` select."""
    keep = np.zeros(bold_times_s.shape[0], bool)
    for p in parts:
        if isinstance(p, str):
            if p == stimulus:
                keep[:] = True
        elif p.stimulus == stimulus:
            keep |= (bold_times_s >= p.start_s - EPS) & (bold_times_s < p.end_s - EPS)
    return keep


def resolve(study: "LoadedStudy", parts: list[SplitPart]) -> Selection:
    """The samples of ``study``'s loaded runs that ``parts`` select."""
    masks = {}
    for i, run in enumerate(study.runs):
        m = sample_mask(parts, run.stimulus, run.bold_times_s)
        if m.any():
            masks[i] = m
    return Selection(masks)


def time_folds(study: "LoadedStudy", k: int = 5, *, gap_s: float | None = None, stimuli: list[str] | None = None
               ) -> list[dict[str, list[SplitPart]]]:
    """``k`` contiguous folds over time: fold ``f`` tests the ``f``-th of ``k`` equal parts of every
    stimulus and trains on the rest, leaving ``gap_s`` out on each side of the test part.

    Args:
        study: a :class:`~tinytribe.data.study.LoadedStudy`.
        k: number of folds (>= 2).
        gap_s: seconds left out between training and test samples; default three times the study's
            longest TR.
        stimuli: the stimuli to fold (default: every stimulus with a run).

    Returns:
        one ``{"train": parts, "test": parts}`` per fold, ready for ``study.select``.
    """
    if k < 2:
        raise ValueError(f"time_folds needs k >= 2, got {k}")
    with_runs = sorted({r.stimulus for r in study.runs})
    stimuli = with_runs if stimuli is None else stimuli
    unknown = [s for s in stimuli if s not in study.stimuli]
    if unknown:
        raise ValueError(f"time_folds: unknown stimulus {unknown[0]!r}")
    if gap_s is None:
        gap_s = 3 * max(r.tr_s for r in study.runs)
    spans = {}
    for s in stimuli:  # the parts cover the stimulus and every BOLD sample of its runs (which may run past its end)
        runs = [r for r in study.runs if r.stimulus == s]
        lo = min([0.0] + [float(r.bold_times_s[0]) for r in runs])
        hi = max([study.stimuli[s].duration_s] + [float(r.bold_times_s[-1] + r.tr_s) for r in runs])
        spans[s] = (lo, hi, np.linspace(0.0, study.stimuli[s].duration_s, k + 1))
    folds = []
    for f in range(k):
        train: list[SplitPart] = []
        test: list[SplitPart] = []
        for s, (lo, hi, edges) in spans.items():
            a = lo if f == 0 else float(edges[f])
            b = hi if f == k - 1 else float(edges[f + 1])
            test.append(SplitRange(s, a, b))
            if a - gap_s > lo:
                train.append(SplitRange(s, lo, a - gap_s))
            if b + gap_s < hi:
                train.append(SplitRange(s, b + gap_s, hi))
        folds.append({"train": train, "test": test})
    return folds


def stimulus_intervals(study: "LoadedStudy", parts: list[SplitPart] | None = None) -> dict[str, list[tuple[float, float]]]:
    """The stretches of stimulus time that split parts hold, per stimulus (for windows over stimuli,
    with or without fMRI runs): a whole stimulus is ``[0, duration)``; ``None`` holds every stimulus."""
    out: dict[str, list[tuple[float, float]]] = {}
    for p in (list(study.stimuli) if parts is None else parts):
        if isinstance(p, str):
            out.setdefault(p, []).append((0.0, study.stimuli[p].duration_s))
        else:
            out.setdefault(p.stimulus, []).append((p.start_s, p.end_s))
    return {k: sorted(v) for k, v in out.items()}
