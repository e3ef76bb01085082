"""Score models against a study's held-out runs: Pearson r per vertex, per ROI, against the ceiling.

    study = load_study("runs/demo_study")
    runs = study.split("test")
    preds = {"ridge": ridge_predictions(study, study.split("train"), runs),
             "teacher": teacher_predictions(study, runs)}
    ev = score(study, runs, preds)
    print(ev.table())

Conventions:
- every model is scored on the same samples: the held-out split's samples (whole runs, or the TRs of
  its time ranges) that every model covers (the teacher's rows start 5 s into a stimulus, so its
  first TRs are left out for all); predictions are made for whole runs;
- r is computed per subject and vertex over the concatenated held-out runs of one presentation, then
  averaged over presentations -- the r of a model against *one measured run*, which is what the
  noise ceiling (``tinytribe.eval.ceiling``) bounds;
- means are over cortex vertices (the medial wall is excluded) and then over subjects; the ceiling
  pools reliabilities over subjects (``tinytribe.eval.ceiling``);
- scores are in the study's space (``Evaluation.space``); predictions in another mesh space are mapped
  explicitly first (``tinytribe.spaces.to_space``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe.data.splits import Selection, as_selection
from tinytribe.data.study import LoadedStudy, time_keys
from tinytribe.eval.ceiling import ceiling_of, inter_subject_predictivity, pooled_ceiling, split_half_reliability
from tinytribe.eval.metrics import pearson_r, resample
from tinytribe.spaces import to_space

Predictions = dict[int, tuple[np.ndarray, np.ndarray]]  # run index -> ((n_TR, V) values, (n_TR,) valid)


def teacher_predictions(study: LoadedStudy, runs: Selection | list[int]) -> Predictions:
    """The cached teacher outputs averaged onto each run's TR grid and mapped to the study space."""
    out = {}
    for i in runs:
        run = study.runs[i]
        tc = study.stimuli[run.stimulus].teacher
        if tc is None:
            raise ValueError(f"stimulus {run.stimulus!r} has no teacher outputs in {study.root / 'study.json'}")
        values = to_space(tc.predictions.astype(np.float64), tc.space, study.study.space)
        pred, valid = resample(values, tc.bold_times_s, tc.sample_width_s, run.bold_times_s, run.tr_s)
        out[i] = (np.nan_to_num(pred).astype(np.float32), valid)
    return out


def ridge_predictions(study: LoadedStudy, train_runs: Selection | list[int], test_runs: Selection | list[int],
                      config=None):
    """The banded ridge baseline (:mod:`tinytribe.eval.ridge`): predictions and per-band predictions."""
    from tinytribe.eval.ridge import fit_predict

    res = fit_predict(study, train_runs, test_runs, config)
    preds = {i: (p, np.ones(p.shape[0], bool)) for i, p in res.predictions.items()}
    return preds, res


def student_predictions(study: LoadedStudy, runs: Selection | list[int], model, *, device: str = "cpu", n_trs: int = 100,
                        drop: str | None = None) -> Predictions:
    """A TinyTribe model's predictions on each run's TR grid, window by window (``n_trs`` TRs each,
    with the usual lead-in), mapped to the study space. ``drop`` leaves one modality out (for
    modality maps). A subject's own FiLM row is used when the model records it (``config.subject_keys``:
    the row of (study name, subject)); without keys, when the model has exactly the study's subjects;
    otherwise (subjects the model never saw) the average subject."""
    import torch

    from tinytribe.data.windows import collate, make_windows, window_item
    from tinytribe.formats import MODALITIES

    model = model.to(device).eval()
    keys = model.config.subject_keys
    if keys is not None:
        rows = {tuple(k): r for r, k in enumerate(keys)}
        row_of = {s: rows.get((study.study.name, s)) for s in study.subjects}
    else:
        row_of = {s: (k if model.config.n_subjects == len(study.subjects) else None) for k, s in enumerate(study.subjects)}
    out = {}
    for i in runs:
        row = row_of[study.runs[i].subject]
        parts = []
        for w in make_windows(study, [i], n_trs=n_trs):
            b = collate([window_item(study, w)])
            available = b["available"].clone()
            if drop is not None:
                available[:, MODALITIES.index(drop)] = False
            with torch.no_grad():
                res = model({m: x.to(device) for m, x in b["features"].items()}, available.to(device),
                            b["t0"].to(device), {"fmri": b["grids"]["fmri"]},
                            subject=torch.tensor([row], device=device) if row is not None else None,
                            masks={m: k.to(device) for m, k in b["masks"].items()})
            parts.append(res.responses["fmri"][0, :w.n].float().cpu().numpy())
        pred = to_space(np.concatenate(parts), model.config.space, study.study.space)
        out[i] = (pred.astype(np.float32), np.ones(pred.shape[0], bool))
    return out


@dataclass
class TeacherAgreement:
    """A student against the teacher on stimulus windows (held-out corpus stimuli, no fMRI needed).

    Attributes:
        r: (V,) Pearson r per output of the model's space over every window's teacher rows (NaN where
            the teacher is constant: the medial wall).
        feature_cos: mean cosine of the KD head's features and the teacher activation (None without).
        expert_share: (n_layers, E) share of routing slots per expert over the windows.
        n_rows: teacher rows scored.
        mse: mean squared error of student and teacher over those rows and the outputs where the
            teacher varies (Phase 3's teacher-consistency monitor).
    """

    r: np.ndarray
    feature_cos: float | None
    expert_share: np.ndarray
    n_rows: int
    mse: float = float("nan")

    def mean(self) -> float:
        return float(np.nanmean(self.r)) if np.isfinite(self.r).any() else float("nan")


def teacher_agreement(study: LoadedStudy, windows: list, model, *, device: str = "cpu",
                      activation: str | None = "fusion_l4", lead_in_s: float = 16.0) -> TeacherAgreement:
    """Run the student (average subject) on ``windows`` (:class:`~tinytribe.data.windows.StimulusWindow` s
    of stimuli with a teacher, e.g. ``make_stimulus_windows(study, "val")``) and compare its teacher-grid
    output with the teacher's predictions, mapped into the model's space
    (:func:`tinytribe.spaces.reduce_space`) when the spaces differ."""
    import torch

    from tinytribe.data.windows import collate, window_item
    from tinytribe.spaces import reduce_space

    if not windows:
        raise ValueError("no windows to compare with the teacher")
    model = model.to(device).eval()
    preds, targets, shares, cos = [], [], [], []
    for w in windows:
        b = collate([window_item(study, w, lead_in_s=lead_in_s)])
        if "teacher" not in b:
            raise ValueError(f"stimulus {w.stimulus!r} has no teacher outputs")
        kd = {activation: b["kd_grids"][activation]} if activation and activation in b.get("teacher_acts", {}) else None
        with torch.no_grad():
            out = model({m: x.to(device) for m, x in b["features"].items()}, b["available"].to(device),
                        b["t0"].to(device), {"teacher": b["grids"]["teacher"]},
                        masks={m: k.to(device) for m, k in b["masks"].items()}, kd_grids=kd)
        k = b["teacher_valid"][0].numpy()
        preds.append(out.responses["teacher"][0].float().cpu().numpy()[k])
        targets.append(b["teacher"][0].float().numpy()[k])
        shares.append(out.aux["expert_share"].float().cpu().numpy() * k.sum())
        if kd:
            valid = b["teacher_acts_valid"][activation][0]
            c = torch.nn.functional.cosine_similarity(out.kd[activation][0].float().cpu()[valid],
                                                      b["teacher_acts"][activation][0].float()[valid], dim=-1)
            cos.append(c.numpy())
    pred, target = np.concatenate(preds), np.concatenate(targets)
    target = reduce_space(target, study.stimuli[windows[0].stimulus].teacher.space, model.config.space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant outputs (medial wall): NaN r, by design
        r = pearson_r(pred, target)
    share = np.sum(shares, axis=0) / max(pred.shape[0], 1)
    counted = np.isfinite(r)   # the outputs where the teacher varies (not the medial wall)
    mse = float(np.mean((pred[:, counted] - target[:, counted]) ** 2)) if counted.any() else float("nan")
    return TeacherAgreement(r=r, feature_cos=float(np.concatenate(cos).mean()) if cos else None,
                            expert_share=share, n_rows=int(pred.shape[0]), mse=mse)


def _check(study: LoadedStudy, runs: list[int], name: str, preds: Predictions) -> None:
    n_out = study.study.n_outputs
    missing = [i for i in runs if i not in preds]
    if missing:
        r = study.runs[missing[0]]
        raise ValueError(f"{name}: no predictions for run {r.subject}/{r.stimulus} (run {missing[0]})")
    for i in runs:
        p, valid = preds[i]
        r = study.runs[i]
        where = f"{name} on {r.subject}/{r.stimulus}"
        if p.ndim != 2 or p.shape[1] != n_out:
            raise ValueError(f"{where}: predictions have {p.shape[-1]} outputs, the study is {study.study.space} "
                             f"({n_out}): map them with tinytribe.spaces.to_space")
        if p.shape[0] != r.fmri.shape[0] or valid.shape != (r.fmri.shape[0],):
            raise ValueError(f"{where}: predictions have {p.shape[0]} samples, the data {r.fmri.shape[0]}")
        if not np.isfinite(p[valid]).all():
            raise ValueError(f"{where}: NaN/Inf in predictions at valid samples")
        if not np.isfinite(r.fmri).all():
            raise ValueError(f"{r.path}: NaN/Inf in the data; load the study with nan_policy='drop' or 'interpolate'")


@dataclass
class Evaluation:
    """Scores of several models on the same held-out samples.

    ``r[name]`` and ``reliability`` are (S, V): per subject and output (NaN on the medial wall).
    ``reference`` holds scores that are not models (the inter-subject predictivity when there are no
    repeats). Ceilings follow :mod:`tinytribe.eval.ceiling`: summaries pool reliabilities over subjects.
    """

    study: str
    space: str
    subjects: list[str]
    stimuli: list[str]
    n_samples: int
    cortex: np.ndarray
    r: dict[str, np.ndarray]
    reliability: np.ndarray | None
    ceiling_kind: str
    agreement: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    output_names: list[str] | None = None
    n_samples_max: int | None = None   # when presentations differ in samples scored (dropped TRs): the most
    extra: dict = field(default_factory=dict)

    def mean(self, values: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Mean over cortex outputs (within ``mask``) of (V,) values, or of (S, V) values then over subjects."""
        m = self.cortex if mask is None else self.cortex & mask
        if not m.any():
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if values.ndim == 1:
                return float(np.nanmean(values[m]))
            return float(np.nanmean(np.nanmean(values[:, m], axis=1)))

    def subject_mean(self, values: np.ndarray) -> np.ndarray:
        """(V,) mean over subjects of (S, V) values (NaN on the medial wall)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(values, axis=0)

    @property
    def ceiling(self) -> np.ndarray | None:
        """(S, V) per-subject ceilings ``sqrt(max(rho_1, 0))`` (None without repeats)."""
        return None if self.reliability is None else ceiling_of(self.reliability)

    def ceiling_map(self) -> np.ndarray | None:
        """(V,) the group's ceiling per output: reliabilities pooled over subjects, then the square root."""
        if self.reliability is None:
            return None
        out = pooled_ceiling(self.reliability)
        out[~self.cortex] = np.nan
        return out

    def ceiling_mean(self, mask: np.ndarray | None = None) -> float:
        """The pooled ceiling averaged over cortex outputs (within ``mask``); NaN without repeats."""
        c = self.ceiling_map()
        return float("nan") if c is None else self.mean(c, mask)

    def ceiling_by_subject(self) -> list[float]:
        """Each subject's own ceiling, averaged over cortex outputs (noisier than the pooled one)."""
        c = self.ceiling
        return [] if c is None else [self.mean(c[s][None]) for s in range(len(self.subjects))]

    def roi_table(self, rois: dict[str, np.ndarray]) -> list[dict]:
        """Per ROI: its outputs in cortex, each model's and reference's mean r, and the pooled ceiling."""
        rows = []
        for roi, mask in rois.items():
            row = {"roi": roi, "vertices": int((mask & self.cortex).sum())}
            for name, r in [*self.r.items(), *self.reference.items()]:
                row[name] = self.mean(r, mask)
            if self.reliability is not None:
                row["ceiling"] = self.ceiling_mean(mask)
            rows.append(row)
        return rows

    def table(self, rois: dict[str, np.ndarray] | None = None) -> str:
        """The scores as aligned text: models (and references) with mean r and r / ceiling, the pooled and
        per-subject ceilings, agreement with the teacher, and an ROI table when ``rois`` are given."""
        ceil = self.ceiling_mean()
        held = f"{len(self.stimuli)} held-out {'stimulus' if len(self.stimuli) == 1 else 'stimuli'}"
        n = f"{self.n_samples}" if self.n_samples_max in (None, self.n_samples) else f"{self.n_samples}-{self.n_samples_max}"
        lines = [f"{self.study}: {len(self.subjects)} subjects, {held}, {n} TRs per presentation scored, in "
                 f"{self.space}; ceiling: {self.ceiling_kind}"]
        rows = [*self.r.items(), *((f"{k} (reference)", v) for k, v in self.reference.items())]
        w = max([len(k) for k, _ in rows] + [len("ceiling (pooled)")]) + 2
        lines.append(f"{'model':<{w}}{'mean r':>9}{'r / ceiling':>13}")
        for name, r in rows:
            rel = f"{self.mean(r) / ceil:>13.2f}" if self.reliability is not None else f"{'-':>13}"
            lines.append(f"{name:<{w}}{self.mean(r):>9.3f}{rel}")
        if self.reliability is not None:
            lines.append(f"{'ceiling (pooled)':<{w}}{ceil:>9.3f}")
            lines.append("ceiling per subject: " + ", ".join(f"{s} {c:.3f}" for s, c in
                                                            zip(self.subjects, self.ceiling_by_subject())))
        for name, a in self.agreement.items():
            lines.append(f"{name}: r with the teacher {self.mean(a):.3f}")
        if rois:
            cols = list(self.r) + list(self.reference) + (["ceiling"] if self.reliability is not None else [])
            widths = [max(len(c) + 2, 9) for c in cols]
            rw = max([len(r) for r in rois] + [3]) + 2
            lines.append("")
            lines.append(f"{'ROI':<{rw}}{'outputs':>9}" + "".join(f"{c:>{cw}}" for c, cw in zip(cols, widths)))
            for row in self.roi_table(rois):
                lines.append(f"{row['roi']:<{rw}}{row['vertices']:>9}"
                             + "".join(f"{row[c]:>{cw}.3f}" for c, cw in zip(cols, widths)))
        return "\n".join(lines)

    def to_json(self, path: str | Path, rois: dict[str, np.ndarray] | None = None) -> Path:
        from tinytribe._io import atomic_write_json

        ceil = self.ceiling_mean() if self.reliability is not None else None

        def summary(r: np.ndarray) -> dict:
            return {"mean_r": self.mean(r), "r_over_ceiling": self.mean(r) / ceil if ceil else None,
                    "mean_r_by_subject": [self.mean(x[None]) for x in r]}

        data = {"study": self.study, "space": self.space, "subjects": self.subjects, "stimuli": self.stimuli,
                "n_samples": self.n_samples, "n_samples_max": self.n_samples_max or self.n_samples,
                "ceiling_kind": self.ceiling_kind, "ceiling_mean": ceil,
                "ceiling_convention": CEILING_CONVENTION, "ceiling_by_subject": self.ceiling_by_subject(),
                "models": {n: summary(r) for n, r in self.r.items()},
                "reference": {n: summary(r) for n, r in self.reference.items()},
                "agreement_with_teacher": {n: self.mean(a) for n, a in self.agreement.items()},
                "output_names": self.output_names,
                "rois": self.roi_table(rois) if rois else [], **self.extra}
        return atomic_write_json(path, data)


CEILING_CONVENTION = ("per output: sqrt(max(mean over subjects of the single-run split-half reliability, 0)); "
                      "ROI and cortex ceilings average that over outputs")


def score(study: LoadedStudy, runs: Selection | list[int], predictions: dict[str, Predictions],
          teacher_name: str | None = "teacher") -> Evaluation:
    """Pearson r of every model on the same samples, the noise ceiling, and each model's agreement with
    the teacher (when ``teacher_name`` is among the predictions).

    Args:
        runs: the held-out samples (a split's :class:`~tinytribe.data.splits.Selection`) or run indices
            (whole runs). Predictions cover whole runs; only the selected samples are scored.
    """
    sel = as_selection(study, runs)
    if not len(sel):
        raise ValueError("no runs to score")
    for name, p in predictions.items():
        _check(study, sel.runs, name, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # medial-wall vertices: all-NaN means, by design
        return _score(study, sel, predictions, teacher_name)


def scored_masks(study: LoadedStudy, sel: Selection, predictions: dict[str, Predictions]) -> dict[int, np.ndarray]:
    """Per run of ``sel``, the (n_TR,) mask of the samples every model is scored on: selected and
    covered by every model's predictions.

    Raises:
        ValueError: a run has no selected sample that every model covers.
    """
    valid = {i: np.logical_and.reduce([sel.mask(i)] + [p[i][1] for p in predictions.values()]) for i in sel.runs}
    for i in sel.runs:
        if not valid[i].any():
            r = study.runs[i]
            raise ValueError(f"run {r.subject}/{r.stimulus}: no selected TR is covered by every model")
    return valid


@dataclass
class SubjectSamples:
    """One subject's scored samples, presentation by presentation (runs concatenated in stimulus order).

    Attributes:
        subject: the subject id.
        groups: presentation (``repeat``) -> its run indices, in stimulus order.
        valid: run index -> (n_TR,) scored-sample mask (:func:`scored_masks`).
        data: presentation -> (T_k, V) measured responses at the scored samples.
        timeline: presentation -> the (stimulus, BOLD time in ms) of each of its T_k samples.
    """

    subject: str
    groups: dict[int, list[int]]
    valid: dict[int, np.ndarray]
    data: dict[int, np.ndarray]
    timeline: dict[int, tuple[tuple[str, int], ...]]

    def pred(self, p: Predictions) -> dict[int, np.ndarray]:
        """Presentation -> (T_k, V) predictions at the same samples as :attr:`data`."""
        return {k: np.concatenate([p[i][0][self.valid[i]] for i in g]) for k, g in self.groups.items()}


def subject_samples(study: LoadedStudy, sel: Selection, valid: dict[int, np.ndarray]) -> list[SubjectSamples]:
    """The scored samples of every subject of ``sel`` (in the study's subject order), as :func:`score`
    aligns them: per presentation, the subject's selected runs concatenated in stimulus order, masked by
    ``valid``."""
    subjects = sorted({study.runs[i].subject for i in sel.runs}, key=study.subjects.index)
    out = []
    for s in subjects:
        groups = study.presentations(s, sel.runs)
        data = {k: np.concatenate([study.runs[i].fmri[valid[i]] for i in g]) for k, g in groups.items()}
        timeline = {k: tuple((study.runs[i].stimulus, t) for i in g
                             for t in time_keys(study.runs[i].bold_times_s[valid[i]])) for k, g in groups.items()}
        out.append(SubjectSamples(s, groups, {i: valid[i] for g in groups.values() for i in g}, data, timeline))
    return out


def _score(study: LoadedStudy, sel: Selection, predictions: dict[str, Predictions],
           teacher_name: str | None) -> Evaluation:
    runs = sel.runs
    valid = scored_masks(study, sel, predictions)
    samples = subject_samples(study, sel, valid)
    subjects = [ss.subject for ss in samples]
    V = study.study.n_outputs
    r = {name: np.full((len(subjects), V), np.nan) for name in predictions}
    agreement = {name: np.full((len(subjects), V), np.nan) for name in predictions
                 if teacher_name in predictions and name != teacher_name}
    reliability = np.full((len(subjects), V), np.nan)
    repeated_any = False
    first_presentations = []
    counts = []
    for si, ss in enumerate(samples):
        groups, data = ss.groups, ss.data
        counts += [d.shape[0] for d in data.values()]
        for name, p in predictions.items():
            pk = ss.pred(p)
            r[name][si] = np.nanmean([pearson_r(pk[k], data[k]) for k in groups], axis=0)
            if name in agreement:
                tk = ss.pred(predictions[teacher_name])
                agreement[name][si] = np.nanmean([pearson_r(pk[k], tk[k]) for k in groups], axis=0)
        stim_lists = {tuple(study.runs[i].stimulus for i in g) for g in groups.values()}
        if len(groups) >= 2 and len(stim_lists) == 1:   # the ceiling on the sample times every presentation has
            order = [g for _, g in sorted(groups.items())]
            common = study.common_samples(order, valid)
            if sum(common[i].sum() for i in order[0]) >= 3:
                reliability[si] = split_half_reliability(np.stack([np.concatenate([study.runs[i].fmri[common[i]]
                                                                                   for i in g]) for g in order]))
                repeated_any = True
        first_presentations.append(groups[min(groups)])
    kind = "split-half reliability of repeated presentations, Spearman-Brown to one run, pooled over subjects (sqrt)"
    reference = {}
    if not repeated_any:
        reliability = None
        kind = "none (no repeated presentations)"
        stim_lists = {tuple(study.runs[i].stimulus for i in g) for g in first_presentations}
        if len(subjects) >= 2 and len(stim_lists) == 1:   # subjects aligned on the sample times all of them have
            common = study.common_samples(first_presentations, valid)
            if sum(common[i].sum() for i in first_presentations[0]) >= 3:
                reference["inter-subject"] = inter_subject_predictivity(np.stack(
                    [np.concatenate([study.runs[i].fmri[common[i]] for i in g]) for g in first_presentations]))
                kind += "; 'inter-subject' is each subject against the mean of the others, a reference"
    cortex = study.cortex
    for arr in [*r.values(), *agreement.values(), *reference.values()] + ([reliability] if reliability is not None else []):
        arr[:, ~cortex] = np.nan
    stimuli = sorted({study.runs[i].stimulus for i in runs})
    return Evaluation(study.study.name, study.study.space, subjects, stimuli, int(min(counts)), cortex, r, reliability,
                      kind, agreement, reference, study.study.output_names, n_samples_max=int(max(counts)))


def save_maps(ev: Evaluation, path: str | Path) -> Path:
    """The arrays of an evaluation in one ``.npz``: (S, V) ``r__<model>``, ``agreement__<model>``,
    ``reference__<name>``, ``reliability``, and the pooled (V,) ``ceiling``."""
    from tinytribe._io import atomic_write

    arrays = {f"r__{n}": a for n, a in ev.r.items()} | {f"agreement__{n}": a for n, a in ev.agreement.items()}
    arrays |= {f"reference__{n}": a for n, a in ev.reference.items()}
    if ev.reliability is not None:
        arrays["reliability"], arrays["ceiling"] = ev.reliability, ev.ceiling_map()
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    meta = np.array(json.dumps({"subjects": ev.subjects, "space": ev.space}))
    return atomic_write(path, lambda f: np.savez(f, **arrays, meta=meta))


def save_parcel_table(ev: Evaluation, path: str | Path) -> list[dict]:
    """Every parcel of a Schaefer-space evaluation as a CSV row: its name, each model's mean r over
    subjects, and the pooled ceiling. Returns the rows."""
    import csv
    import io

    from tinytribe._io import atomic_write_bytes
    from tinytribe.spaces import parcellation

    names = parcellation(ev.space)[1]
    cols = {m: ev.subject_mean(r) for m, r in ev.r.items()}
    if ev.reliability is not None:
        cols["ceiling"] = ev.ceiling_map()
    rows = [{"parcel": n, **{c: float(v[k]) for c, v in cols.items()}} for k, n in enumerate(names)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["parcel", *cols], lineterminator="\n")
    w.writeheader()
    w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return rows


def ridge_modality_maps(study: LoadedStudy, runs: Selection | list[int], ridge) -> dict[str, np.ndarray]:
    """Per output, the variance of held-out data each band of the banded ridge explains (himalaya's
    split R^2 on the first presentation's selected samples of every held-out stimulus), averaged over
    subjects: {band: (V,)}. ``ridge`` is the :class:`~tinytribe.eval.ridge.RidgeResult`."""
    from himalaya.scoring import r2_score_split

    sel = as_selection(study, runs)
    maps = []
    for s in sorted({study.runs[i].subject for i in sel}):
        g = study.presentations(s, sel)
        first = g[min(g)]
        y = np.concatenate([study.runs[i].fmri[sel.mask(i)] for i in first]).astype(np.float64)
        split = np.concatenate([ridge.split_predictions[i][:, sel.mask(i)] for i in first], axis=1).astype(np.float64)
        y -= y.mean(0)                                # a held-out part of a run is not zero-mean; split R^2
        split -= split.mean(1, keepdims=True)         # (like r) measures variation around the means
        with np.errstate(invalid="ignore", divide="ignore"):  # medial wall: zero variance
            maps.append(np.asarray(r2_score_split(y, split)))
    mean = np.mean(maps, axis=0)
    mean[:, ~study.cortex] = np.nan
    return dict(zip(ridge.bands, mean))


def student_modality_maps(study: LoadedStudy, runs: Selection | list[int], model, full: Predictions, *, device: str = "cpu"
                          ) -> dict[str, np.ndarray]:
    """Per vertex, how much r the student loses without each modality (leave-one-modality-out), mean over
    subjects: {m: (V,)}. The design's modality gates are per time step, not per vertex; this is the
    per-vertex map they are meant to produce."""
    from tinytribe.formats import MODALITIES

    base = score(study, runs, {"full": full}, teacher_name=None).r["full"]
    out = {}
    for m in MODALITIES:
        without = student_predictions(study, runs, model, device=device, drop=m)
        r = score(study, runs, {"without": without}, teacher_name=None).r["without"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[m] = np.nanmean(base - r, axis=0)
    return out
