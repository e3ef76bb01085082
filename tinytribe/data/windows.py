"""Training windows: N TRs of one run, with the features that may explain them.

A window of TRs ``k0 .. k0 + N - 1`` of a run has BOLD samples at ``tau_k`` covering
``[tau_k, tau_k + TR)``. Its feature window runs from ``tau_k0 - lead_in_s`` (past features the HRF
needs: 16 s by default, the length of the student's HRF filter) to the end of its last BOLD sample,
``tau_last + TR`` -- the steps that start before then: every BOLD sample is covered in full (a TR
that is not a multiple of the step would otherwise lose up to a step), and a non-causal model sees at
most one step (0.5 s) past the window's last sample, far less than the haemodynamic lag.
Feature steps before the stimulus's first or after its last step are zeros with mask 0 (nothing was
on screen).

Teacher targets keep their own grid: rows whose interval ``[tau, tau + width)`` lies inside
``[tau_k0, tau_last + TR)``; activations (which stand for stimulus time) whose time lies in that
stretch moved back by the teacher's ``hrf_offset_s`` -- so windows that tile BOLD time, or sit in
different splits, never share an activation target.

    windows = make_windows(study, study.split("train"), n_trs=50)
    batch = collate([window_item(study, w) for w in windows[:8]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinytribe.data.splits import Selection, as_selection
from tinytribe.data.study import LoadedStudy
from tinytribe.formats import MODALITIES

EPS = 1e-6


@dataclass(frozen=True)
class Window:
    """TRs ``first .. first + n - 1`` of run ``run`` (an index into ``LoadedStudy.runs``)."""

    run: int
    first: int
    n: int


@dataclass(frozen=True)
class StimulusWindow:
    """``[start_s, end_s)`` of BOLD time of a stimulus, with or without fMRI runs: the teacher's rows
    (and activations) in it are the targets. For corpora without fMRI (distillation, self-supervision)."""

    stimulus: str
    start_s: float
    end_s: float


def make_stimulus_windows(study: LoadedStudy, parts: list | str | None = None, *, length_s: float = 150.0,
                          stride_s: float | None = None, grid: str = "teacher", min_s: float = 10.0
                          ) -> list[StimulusWindow]:
    """Windows of ``length_s`` seconds every ``stride_s`` (default ``length_s``) over stimuli.

    Args:
        parts: a split's name, split parts (stimulus ids, time ranges), or None: every stimulus with a
            teacher (``grid="teacher"``) or every stimulus (``grid="time"``) -- val and test stimuli
            included, so training code should name its split. Windows lie inside the parts' time
            ranges, so held-out stretches of a corpus stay held out.
        grid: ``"teacher"``: windows start on the first teacher row of each stretch (BOLD times) and
            follow every ``stride_s``; a named stimulus without teacher outputs is refused (with
            ``parts=None`` it is skipped); ``"time"``: plain stimulus time from each stretch's start.
        min_s: a last window shorter than this is dropped.
    """
    from tinytribe.data.splits import stimulus_intervals

    if grid not in ("teacher", "time"):
        raise ValueError(f"grid must be 'teacher' or 'time', got {grid!r}")
    if length_s <= 0 or (stride_s is not None and stride_s <= 0):
        raise ValueError(f"length_s and stride_s must be > 0, got {length_s}, {stride_s}")
    if isinstance(parts, str):
        parts = study.split_parts(parts)
    stride = stride_s or length_s
    out = []
    for sid, stretches in stimulus_intervals(study, parts).items():
        tc = study.stimuli[sid].teacher
        if grid == "teacher" and tc is None:
            if parts is not None:
                raise ValueError(f"stimulus {sid!r} has no teacher outputs: windows on the teacher's grid need them "
                                 f"(grid='time' windows plain time)")
            continue
        for a, b in stretches:
            if grid == "teacher":   # the teacher rows that lie inside the stretch
                t = tc.bold_times_s[(tc.bold_times_s >= a - EPS) & (tc.bold_times_s + tc.sample_width_s <= b + EPS)]
                if not t.size:
                    continue
                a, b = float(t[0]), float(t[-1] + tc.sample_width_s)
            start = a
            while start < b - EPS:
                end = min(start + length_s, b)
                if end - start >= min(min_s, length_s) - EPS:
                    out.append(StimulusWindow(sid, float(start), float(end)))
                start += stride
    return out


def make_windows(study: LoadedStudy, runs: Selection | list[int] | None = None, *, n_trs: int = 50,
                 stride_trs: int | None = None, min_trs: int = 1) -> list[Window]:
    """Windows of ``n_trs`` TRs every ``stride_trs`` (default ``n_trs``: no overlap) over the runs.

    ``runs`` may be a split's :class:`~tinytribe.data.splits.Selection`: windows then lie inside each
    contiguous stretch of selected samples, never across a split boundary. The last window of a
    stretch may be shorter; windows shorter than ``min_trs`` are dropped. A training curriculum changes
    ``n_trs`` (50, then 100) and makes new windows.
    """
    if n_trs < 1:
        raise ValueError(f"n_trs must be >= 1, got {n_trs}")
    stride = stride_trs or n_trs
    if stride < 1:
        raise ValueError(f"stride_trs must be >= 1, got {stride}")
    sel = as_selection(study, runs)
    out = []
    for i in sel:
        mask = sel.mask(i).astype(np.int8)
        edges = np.flatnonzero(np.diff(np.r_[0, mask, 0]))      # starts and ends of selected stretches
        for a, b in zip(edges[::2], edges[1::2]):
            for first in range(a, b, stride):
                n = min(n_trs, b - first)
                if n >= min_trs:
                    out.append(Window(i, int(first), int(n)))
                if first + n >= b:
                    break
    return out


class SubjectIndex:
    """FiLM rows for subjects identified by (study, subject): ``sub-01`` of two studies are two people.

    Built from the studies a model is trained on, in order; a study's subjects keep their order.
    """

    def __init__(self, studies: list[LoadedStudy]):
        self.keys: list[tuple[str, str]] = []
        for st in studies:
            self.keys += [(st.study.name, s) for s in st.subjects if (st.study.name, s) not in self.keys]
        self._row = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, study: LoadedStudy, subject: str) -> int:
        key = (study.study.name, subject)
        if key not in self._row:
            raise KeyError(f"subject {subject!r} of study {study.study.name!r} is not in this subject index "
                           f"({len(self.keys)} subjects of {len({k[0] for k in self.keys})} studies)")
        return self._row[key]


def feature_window(fc, t_start: float, t_end: float, *, lead_in_s: float = 16.0
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """The feature steps that may explain BOLD samples in ``[t_start, t_end)``: from ``lead_in_s``
    before ``t_start`` to the last step starting before ``t_end``; steps outside the stimulus are zeros
    with mask 0.

    Args:
        fc: a :class:`~tinytribe.formats.FeatureCache` (or its lazy reader).

    Returns:
        ``features`` {m: (T, D) float16, the model inputs}, ``masks`` {m: (T,) bool} and the stimulus
        time (s) of step 0.
    """
    rate = fc.rate_hz
    i0 = math.floor((t_start - lead_in_s - fc.t0_s) * rate + EPS)
    i1 = math.ceil((t_end - fc.t0_s) * rate - EPS)          # steps starting before t_end: every TR covered
    lo, hi = max(i0, 0), min(i1, fc.n_steps)
    feats, masks = {}, {}
    for m in fc.masks:
        stream = fc.model_input(m, lo, max(hi, lo), dtype=np.float16)   # (hi - lo, D): text with its timing
        x = np.zeros((i1 - i0, stream.shape[1]), np.float16)
        k = np.zeros(i1 - i0, bool)
        if hi > lo:
            x[lo - i0:hi - i0] = stream
            k[lo - i0:hi - i0] = fc.masks[m][lo:hi]
        feats[m], masks[m] = x, k
    return feats, masks, fc.t0_s + i0 / rate


def window_item(study: LoadedStudy, w: Window | StimulusWindow, *, lead_in_s: float = 16.0,
                subjects: SubjectIndex | None = None) -> dict[str, Any]:
    """Everything one window holds, as numpy arrays.

    Returns a dict with ``features`` / ``masks`` (per modality, (T, D) float16 as cached / (T,) bool;
    the student's inputs, :meth:`~tinytribe.formats.FeatureCache.model_input`: the model casts them on
    its device), ``t0``
    (stimulus time of feature step 0), ``rate_hz``, ``available`` (3,) bool in ``MODALITIES`` order,
    ``fmri`` (N, V), ``bold_times_s`` (N,), ``tr_s``, ``subject`` (the FiLM row: the subject's row in
    ``subjects``, or its index in this study), ``subject_key`` (study, subject) -- all None (subject
    -1, the average) for a :class:`StimulusWindow` --, ``stimulus``, and --
    when the stimulus has a teacher -- ``teacher`` (K, V_t), ``teacher_times_s`` (K,),
    ``teacher_width_s``, ``teacher_id`` (whose outputs they are), ``teacher_acts`` (name -> (M, D)), all float16, ``teacher_act_times_s`` and
    ``teacher_act_width_s`` (the time one activation row stands for: its spacing).
    """
    if isinstance(w, StimulusWindow):
        run, stim = None, study.stimuli[w.stimulus]
        t_start, t_end = w.start_s, w.end_s
    else:
        run = study.runs[w.run]
        stim = study.stimuli[run.stimulus]
        bold = run.bold_times_s[w.first:w.first + w.n]
        t_start, t_end = bold[0], bold[-1] + run.tr_s
    fc = stim.features
    feats, masks, t0 = feature_window(fc, t_start, t_end, lead_in_s=lead_in_s)
    item: dict[str, Any] = {
        "features": feats, "masks": masks, "t0": t0, "rate_hz": fc.rate_hz,
        "available": np.array([m in stim.modalities for m in MODALITIES]), "stimulus": stim.id}
    if run is not None:
        item |= {"fmri": run.fmri[w.first:w.first + w.n], "bold_times_s": bold, "tr_s": run.tr_s,
                 "subject": subjects.row(study, run.subject) if subjects is not None else run.subject_index,
                 "subject_key": (study.study.name, run.subject), "indexed": subjects is not None}
    else:   # a corpus window: no fMRI, no subject (the average subject predicts the teacher)
        item |= {"fmri": None, "bold_times_s": None, "tr_s": None, "subject": -1, "subject_key": None}
    tc = stim.teacher
    if tc is not None:
        keep = (tc.bold_times_s >= t_start - EPS) & (tc.bold_times_s + tc.sample_width_s <= t_end + EPS)
        item |= {"teacher": tc.take_predictions(keep, np.float16), "teacher_times_s": tc.bold_times_s[keep],
                 "teacher_width_s": tc.sample_width_s, "teacher_id": tc.teacher.get("id", "")}
        # activations stand for stimulus time; a window owns those of the stimulus its BOLD samples follow
        # (BOLD time minus the teacher's offset), so windows that tile time never share an activation target
        a0, a1 = t_start - tc.hrf_offset_s, t_end - tc.hrf_offset_s
        acts, times, widths = {}, {}, {}
        for name in tc.activations:
            t = tc.activation_times_s[name]
            k = (t >= a0 - EPS) & (t < a1 - EPS)
            acts[name], times[name] = tc.take_activation(name, k, np.float16), t[k]
            widths[name] = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / fc.rate_hz
        item |= {"teacher_acts": acts, "teacher_act_times_s": times, "teacher_act_width_s": widths}
    return item


def collate(items: list[dict[str, Any]]):
    """Stack window items into a batch for :class:`tinytribe.model.TinyTribe`.

    Arrays keep their dtypes (features, teacher and activations float16 as cached: half the memory
    traffic; the model and the losses cast them on the device). Feature streams of different lengths
    are padded at the *end* with zeros and mask 0, so that every
    item keeps its own ``t0`` and its steps keep their positions (the time embeddings are absolute);
    the model leaves masked steps out of attention and pooling, so an item's prediction is the same
    alone and batched (window items hold equally long modality streams; streams of different lengths
    would be stretched by the model's length alignment, padding included). Targets are padded at the end with NaN times (ignored by the time grids).

    Returns:
        a dict: ``features`` {m: (B, T, D)}, ``masks`` {m: (B, T)}, ``available`` (B, 3), ``t0`` (B,),
        ``grids`` {"fmri": TimeGrid[, "teacher": TimeGrid]}, ``fmri`` (B, N, V) and ``fmri_valid`` (B, N)
        when any item has fMRI (a corpus window's row is never valid), ``subject`` (B,; -1 for corpus
        windows: the average subject), and when any item has a teacher: ``teacher`` (B, K, V_t), ``teacher_valid``
        (B, K), ``has_teacher`` (B,) -- items without one have no valid row, so windows with and without
        a teacher share a batch --, ``teacher_ids`` (B,; the teacher id of each item, None without one), and ``teacher_acts`` {name: (B, M, D)}, ``teacher_acts_valid``
        {name: (B, M)}, ``kd_grids`` {name: TimeGrid} (the activations' times, for the model's KD features).
    """
    import torch

    from tinytribe.model.timegrid import TimeGrid

    if not items:
        raise ValueError("collate needs at least one window")
    studies = {it["subject_key"][0] for it in items if it.get("subject_key")}
    if len(studies) > 1 and not all(it.get("indexed", False) for it in items if it.get("subject_key")):
        raise ValueError(f"windows of studies {', '.join(sorted(studies))} share a batch, but their subject ids are "
                         f"each study's own: make the items with window_item(..., subjects=SubjectIndex(studies))")
    rates = {it["rate_hz"] for it in items}
    trs = {round(it["tr_s"], 6) for it in items if it["tr_s"] is not None}
    if len(rates) > 1 or len(trs) > 1:
        raise ValueError(f"windows mix feature rates {sorted(rates)} or TRs {sorted(trs)}: batch each study separately")
    T = max(next(iter(it["features"].values())).shape[0] for it in items)
    B = len(items)
    feats, masks = {}, {}
    for m in items[0]["features"]:
        D = items[0]["features"][m].shape[1]
        x = np.empty((B, T, D), items[0]["features"][m].dtype)
        k = np.zeros((B, T), bool)
        for b, it in enumerate(items):
            n = it["features"][m].shape[0]
            x[b, :n], k[b, :n] = it["features"][m], it["masks"][m]
            x[b, n:] = 0.0
        feats[m], masks[m] = torch.from_numpy(x), torch.from_numpy(k)
    t0 = torch.tensor([it["t0"] for it in items], dtype=torch.float64)

    def targets(values: list[np.ndarray | None], times: list[np.ndarray | None]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack per-item (n_b, V) values at (n_b,) times; None: an item without them (no valid row)."""
        N = max([v.shape[0] for v in values if v is not None] + [1])
        V = next(v.shape[1] for v in values if v is not None)
        y = np.empty((B, N, V), next(v.dtype for v in values if v is not None))   # rows filled, then padding zeroed
        t = np.full((B, N), np.nan)
        for b, (v, tt) in enumerate(zip(values, times)):
            n = 0 if v is None else v.shape[0]
            if n:
                y[b, :n], t[b, :n] = v, tt
            y[b, n:] = 0.0
        return torch.from_numpy(y), torch.from_numpy(t), torch.from_numpy(~np.isnan(t))

    batch = {"features": feats, "masks": masks, "available": torch.from_numpy(np.stack([it["available"] for it in items])),
             "t0": t0, "grids": {}, "subject": torch.tensor([it["subject"] for it in items])}
    if trs:   # items of corpus windows have no fMRI: no valid row
        fmri, times, valid = targets([it["fmri"] for it in items], [it["bold_times_s"] for it in items])
        batch |= {"fmri": fmri, "fmri_valid": valid}
        batch["grids"]["fmri"] = TimeGrid(times, trs.pop())
    with_teacher = [it for it in items if "teacher" in it]
    if with_teacher:
        widths = {it["teacher_width_s"] for it in with_teacher}
        if len(widths) > 1:
            raise ValueError(f"windows mix teacher sample widths {sorted(widths)}: batch each teacher separately")
        y, t, v = targets([it.get("teacher") for it in items], [it.get("teacher_times_s") for it in items])
        batch |= {"teacher": y, "teacher_valid": v, "has_teacher": torch.tensor(["teacher" in it for it in items])}
        batch["grids"]["teacher"] = TimeGrid(t, widths.pop())
        batch["teacher_ids"] = [it.get("teacher_id") for it in items]
        acts, acts_valid, kd_grids = {}, {}, {}
        names = list(dict.fromkeys(n for it in with_teacher for n in it["teacher_acts"]))
        for name in names:   # a teacher without this activation (student pseudo-labels): no valid row
            has = [it if "teacher" in it and name in it["teacher_acts"] else None for it in items]
            a, at, av = targets([it["teacher_acts"][name] if it else None for it in has],
                                [it["teacher_act_times_s"][name] if it else None for it in has])
            acts[name], acts_valid[name] = a, av
            kd_grids[name] = TimeGrid(at, next(it for it in has if it)["teacher_act_width_s"][name])
        batch |= {"teacher_acts": acts, "teacher_acts_valid": acts_valid, "kd_grids": kd_grids}
    return batch


class WindowSampler:
    """Draws windows from several studies with per-study sampling weights, uniformly within a study.

    A weight is a rate: a study of weight ``w`` is drawn ``w`` times as often per window as at weight 1,
    so with every weight 1 each window is equally likely whatever study it is in, and at 0.3 a study is
    seen 0.3 times as often (the design mixes Lebel 2023's stories into Phase 3 at 0.3). Deterministic
    from ``seed``: ``draw`` counts its draws in ``position``, so a resumed run continues the same
    sequence; ``epoch_batches`` depends on the epoch alone.
    """

    def __init__(self, windows: dict[str, list], weights: dict[str, float] | None = None, *, seed: int = 0):
        empty = [k for k, v in windows.items() if not v]
        if empty:
            raise ValueError(f"no windows for {', '.join(empty)}")
        self.names = sorted(windows)
        self.windows = windows
        unknown = set(weights or {}) - set(self.names)
        if unknown:
            raise ValueError(f"weights for unknown studies: {sorted(unknown)}")
        self.weights = np.array([(weights or {}).get(n, 1.0) for n in self.names], dtype=np.float64)
        if (self.weights < 0).any() or self.weights.sum() <= 0:
            raise ValueError(f"sampling weights must be >= 0 with a positive sum, got "
                             f"{dict(zip(self.names, self.weights.tolist()))}")
        mass = self.weights * [len(windows[n]) for n in self.names]
        self.p = mass / mass.sum()   # each study's share of the draws
        self.seed = seed
        self.position = 0

    def draw(self, n: int) -> list[tuple[str, Any]]:
        out = []
        for _ in range(n):
            rng = np.random.default_rng((self.seed, self.position))
            name = self.names[rng.choice(len(self.names), p=self.p)]
            out.append((name, self.windows[name][rng.integers(len(self.windows[name]))]))
            self.position += 1
        return out

    def epoch_batches(self, epoch: int, batch_size: int, *, min_batch: int = 1) -> list[list[tuple[str, Any]]]:
        """One epoch as batches that each hold windows of one study (studies differ in TR).

        A study of weight ``w`` gives ``w x its windows`` windows to the epoch (1: each once; 0.3: 30 % of
        them, a different subset each epoch; 2: each twice; a fraction is rounded up with its own
        probability, so one window at 0.3 is in 30 % of the epochs), in an order fixed by (seed, epoch).
        A study's last batch is kept when it holds at least ``min_batch`` windows (the number of
        processes); the batches of all studies are shuffled together.
        """
        rng = np.random.default_rng((self.seed, 1_000_003, epoch))
        batches = []
        for name, w in zip(self.names, self.weights):
            pool = self.windows[name]
            expected = w * len(pool)   # rounded at random, so a small study at a small weight still trains
            n = int(expected) + int(rng.random() < expected - int(expected))
            order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n] if n else []
            picked = [(name, pool[i]) for i in order]
            batches += [b for b in (picked[i:i + batch_size] for i in range(0, n, batch_size)) if len(b) >= min_batch]
        return [batches[i] for i in rng.permutation(len(batches))]
