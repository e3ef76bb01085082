"""Score models against a study's held-out runs: Pearson r per vertex, per ROI, against the ceiling.

    study = load_study("runs/demo_study")
    runs = study.split("test")
    preds = {"ridge": ridge_predictions(study, study.split("train"), runs),
             "teacher": teacher_predictions(study, runs)}
    ev = score(study, runs, preds)
    print(ev.table())

Conventions:
- every model is scored on the same samples: the TRs every model covers (the teacher's rows start
  5 s into a stimulus, so its first TRs are left out for all);
- r is computed per subject and vertex over the concatenated held-out runs of one presentation, then
  averaged over presentations -- the r of a model against *one measured run*, which is what the
  noise ceiling (``tinytribe.eval.ceiling``) bounds;
- means are over cortex vertices (the medial wall is excluded) and then over subjects;
- scores are in the study's space (``Evaluation.space``); predictions in another mesh space are mapped
  explicitly first (``tinytribe.spaces.to_space``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe.data.study import LoadedStudy
from tinytribe.eval.ceiling import inter_subject_predictivity, noise_ceiling
from tinytribe.eval.metrics import pearson_r, resample
from tinytribe.spaces import to_space

Predictions = dict[int, tuple[np.ndarray, np.ndarray]]  # run index -> ((n_TR, V) values, (n_TR,) valid)


def teacher_predictions(study: LoadedStudy, runs: list[int]) -> Predictions:
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


def ridge_predictions(study: LoadedStudy, train_runs: list[int], test_runs: list[int], config=None):
    """The banded ridge baseline (:mod:`tinytribe.eval.ridge`): predictions and per-band predictions."""
    from tinytribe.eval.ridge import fit_predict

    res = fit_predict(study, train_runs, test_runs, config)
    preds = {i: (p, np.ones(p.shape[0], bool)) for i, p in res.predictions.items()}
    return preds, res


def student_predictions(study: LoadedStudy, runs: list[int], model, *, device: str = "cpu", n_trs: int = 100,
                        drop: str | None = None) -> Predictions:
    """A TinyTribe model's predictions on each run's TR grid, window by window (``n_trs`` TRs each,
    with the usual lead-in), mapped to the study space. ``drop`` leaves one modality out (for
    modality maps). The subject's own FiLM vectors are used when the model has as many subjects as
    the study, the average subject otherwise."""
    import torch

    from tinytribe.data.windows import collate, make_windows, window_item
    from tinytribe.formats import MODALITIES

    model = model.to(device).eval()
    own_subjects = model.config.n_subjects == len(study.subjects)
    out = {}
    for i in runs:
        parts = []
        for w in make_windows(study, [i], n_trs=n_trs):
            b = collate([window_item(study, w)])
            available = b["available"].clone()
            if drop is not None:
                available[:, MODALITIES.index(drop)] = False
            with torch.no_grad():
                res = model({m: x.to(device) for m, x in b["features"].items()}, available.to(device),
                            b["t0"].to(device), {"fmri": b["grids"]["fmri"]},
                            subject=b["subject"].to(device) if own_subjects else None)
            parts.append(res.responses["fmri"][0, :w.n].float().cpu().numpy())
        pred = to_space(np.concatenate(parts), model.config.space, study.study.space)
        out[i] = (pred.astype(np.float32), np.ones(pred.shape[0], bool))
    return out


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

    ``r[name]`` and ``ceiling`` are (S, V): per subject and vertex (NaN on the medial wall).
    """

    study: str
    space: str
    subjects: list[str]
    stimuli: list[str]
    n_samples: int
    cortex: np.ndarray
    r: dict[str, np.ndarray]
    ceiling: np.ndarray | None
    ceiling_kind: str
    agreement: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def mean(self, values: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Mean over cortex vertices (within ``mask``), then over subjects."""
        m = self.cortex if mask is None else self.cortex & mask
        if not m.any():
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(np.nanmean(values[:, m], axis=1)))

    def subject_mean(self, values: np.ndarray) -> np.ndarray:
        """(V,) mean over subjects of (S, V) values (NaN on the medial wall)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(values, axis=0)

    def roi_table(self, rois: dict[str, np.ndarray]) -> list[dict]:
        rows = []
        for roi, mask in rois.items():
            row = {"roi": roi, "vertices": int((mask & self.cortex).sum())}
            for name, r in self.r.items():
                row[name] = self.mean(r, mask)
            if self.ceiling is not None:
                row["ceiling"] = self.mean(self.ceiling, mask)
            rows.append(row)
        return rows

    def table(self, rois: dict[str, np.ndarray] | None = None) -> str:
        lines = [f"{self.study}: {len(self.subjects)} subjects, {len(self.stimuli)} held-out stimuli, "
                 f"{self.n_samples} TRs per presentation scored, in {self.space}; ceiling: {self.ceiling_kind}"]
        ceil = self.mean(self.ceiling) if self.ceiling is not None else float("nan")
        lines.append(f"{'model':<12}{'mean r':>9}{'r / ceiling':>13}")
        for name, r in self.r.items():
            lines.append(f"{name:<12}{self.mean(r):>9.3f}{self.mean(r) / ceil:>13.2f}")
        lines.append(f"{'ceiling':<12}{ceil:>9.3f}")
        for name, a in self.agreement.items():
            lines.append(f"{name}: r with the teacher {self.mean(a):.3f}")
        if rois:
            names = list(self.r) + (["ceiling"] if self.ceiling is not None else [])
            lines.append("")
            lines.append(f"{'ROI':<24}{'vertices':>9}" + "".join(f"{n:>10}" for n in names))
            for row in self.roi_table(rois):
                lines.append(f"{row['roi']:<24}{row['vertices']:>9}" + "".join(f"{row[n]:>10.3f}" for n in names))
        return "\n".join(lines)

    def to_json(self, path: str | Path, rois: dict[str, np.ndarray] | None = None) -> Path:
        from tinytribe._io import atomic_write_json

        ceil = self.mean(self.ceiling) if self.ceiling is not None else None
        data = {"study": self.study, "space": self.space, "subjects": self.subjects, "stimuli": self.stimuli,
                "n_samples": self.n_samples, "ceiling_kind": self.ceiling_kind, "ceiling_mean": ceil,
                "models": {n: {"mean_r": self.mean(r), "r_over_ceiling": self.mean(r) / ceil if ceil else None,
                               "mean_r_by_subject": [float(np.nanmean(x[self.cortex])) for x in r]}
                           for n, r in self.r.items()},
                "agreement_with_teacher": {n: self.mean(a) for n, a in self.agreement.items()},
                "rois": self.roi_table(rois) if rois else [], **self.extra}
        return atomic_write_json(path, data)


def score(study: LoadedStudy, runs: list[int], predictions: dict[str, Predictions],
          teacher_name: str | None = "teacher") -> Evaluation:
    """Pearson r of every model on the same samples, the noise ceiling, and each model's agreement with
    the teacher (when ``teacher_name`` is among the predictions)."""
    if not runs:
        raise ValueError("no runs to score")
    for name, p in predictions.items():
        _check(study, runs, name, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # medial-wall vertices: all-NaN means, by design
        return _score(study, runs, predictions, teacher_name)


def _score(study: LoadedStudy, runs: list[int], predictions: dict[str, Predictions],
           teacher_name: str | None) -> Evaluation:
    valid = {i: np.logical_and.reduce([p[i][1] for p in predictions.values()]) for i in runs}
    for i in runs:
        if not valid[i].any():
            r = study.runs[i]
            raise ValueError(f"run {r.subject}/{r.stimulus}: no TR is covered by every model")
    subjects = sorted({study.runs[i].subject for i in runs}, key=study.subjects.index)
    V = study.study.n_outputs
    r = {name: np.full((len(subjects), V), np.nan) for name in predictions}
    agreement = {name: np.full((len(subjects), V), np.nan) for name in predictions
                 if teacher_name in predictions and name != teacher_name}
    ceiling = np.full((len(subjects), V), np.nan)
    repeated_any = False
    first_presentations = []
    n_samples = 0
    for si, s in enumerate(subjects):
        groups = study.presentations(s, runs)
        data = {k: np.concatenate([study.runs[i].fmri[valid[i]] for i in g]) for k, g in groups.items()}
        n_samples = n_samples or data[min(groups)].shape[0]
        for name, p in predictions.items():
            pk = {k: np.concatenate([p[i][0][valid[i]] for i in g]) for k, g in groups.items()}
            r[name][si] = np.nanmean([pearson_r(pk[k], data[k]) for k in groups], axis=0)
            if name in agreement:
                tk = {k: np.concatenate([predictions[teacher_name][i][0][valid[i]] for i in g]) for k, g in groups.items()}
                agreement[name][si] = np.nanmean([pearson_r(pk[k], tk[k]) for k in groups], axis=0)
        stim_lists = {tuple(study.runs[i].stimulus for i in g) for g in groups.values()}
        if len(groups) >= 2 and len(stim_lists) == 1:
            ceiling[si] = noise_ceiling(np.stack([data[k] for k in sorted(groups)]))
            repeated_any = True
        first_presentations.append(data[min(groups)])
    kind = "split-half reliability of repeated presentations, Spearman-Brown to one run (sqrt)"
    if not repeated_any:
        ceiling = None
        kind = "none (no repeated presentations)"
        if len(subjects) >= 2 and len({d.shape for d in first_presentations}) == 1:
            isp = inter_subject_predictivity(np.stack(first_presentations))
            r["inter-subject"] = isp  # a reference, not a ceiling
            kind += "; 'inter-subject' is each subject against the mean of the others, a reference"
    cortex = study.cortex
    for arr in [*r.values(), *agreement.values()] + ([ceiling] if ceiling is not None else []):
        arr[:, ~cortex] = np.nan
    stimuli = sorted({study.runs[i].stimulus for i in runs})
    return Evaluation(study.study.name, study.study.space, subjects, stimuli, int(n_samples), cortex, r, ceiling, kind,
                      agreement)


def save_maps(ev: Evaluation, path: str | Path) -> Path:
    """The (S, V) arrays of an evaluation in one ``.npz`` (``r__<model>``, ``ceiling``, ``agreement__<model>``)."""
    from tinytribe._io import atomic_write

    arrays = {f"r__{n}": a for n, a in ev.r.items()} | {f"agreement__{n}": a for n, a in ev.agreement.items()}
    if ev.ceiling is not None:
        arrays["ceiling"] = ev.ceiling
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    meta = np.array(json.dumps({"subjects": ev.subjects, "space": ev.space}))
    return atomic_write(path, lambda f: np.savez(f, **arrays, meta=meta))


def ridge_modality_maps(study: LoadedStudy, runs: list[int], split_predictions: dict[int, np.ndarray]
                        ) -> dict[str, np.ndarray]:
    """Per vertex, the variance of held-out data each band of the banded ridge explains (himalaya's
    split R^2 on the first presentation of every held-out stimulus), averaged over subjects: {m: (V,)}."""
    from himalaya.scoring import r2_score_split

    from tinytribe.formats import MODALITIES

    maps = []
    for s in sorted({study.runs[i].subject for i in runs}):
        g = study.presentations(s, runs)
        first = g[min(g)]
        y = np.concatenate([study.runs[i].fmri for i in first]).astype(np.float64)
        split = np.concatenate([split_predictions[i] for i in first], axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):  # medial wall: zero variance
            maps.append(np.asarray(r2_score_split(y, split)))
    mean = np.mean(maps, axis=0)
    mean[:, ~study.cortex] = np.nan
    return dict(zip(MODALITIES, mean))


def student_modality_maps(study: LoadedStudy, runs: list[int], model, full: Predictions, *, device: str = "cpu"
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
