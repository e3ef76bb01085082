"""Student pseudo-labels (design 5c): a trained student run as a teacher, its outputs cached like the
teacher's, then mixed into Phase 3 at a lower weight.

    teacher = load_teacher("student", checkpoint="runs/kd/checkpoints/best.pt", features="runs/study/features")
    run_job(manifest, teacher_job_work(media_root, out_dir, teacher, space="fsaverage4"), ...)   # notebook 02's job
    study = use_pseudo_labels(load_study("runs/study"), manifest)   # their stimuli's teacher is now the student

The student predicts from the stimuli's cached features (no backbones run), for its average subject,
on the teacher's grid: 1 Hz rows standing for BOLD 5 s after their stimulus second, as TRIBE v2's do.
It has no fusion activations to give (Phase 3 drops the feature term for these windows). Each chunk
records its origin in its ``events``: ``{"type": "student", "checkpoint", "checkpoint_sha256",
"phase", "step", "score"}`` (``score``: the checkpoint's validation score, which Phase 3's
``pseudo_min_score`` checks); the teacher id is ``tinytribe/student`` and the revision names the
checkpoint, so a changed student makes new chunks.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from tinytribe.formats import MODALITIES, FeatureCache, Manifest, TeacherChunk
from tinytribe.teacher.protocol import TeacherInfo, TeacherOutput, grid_times

STUDENT_TEACHER = "tinytribe/student"
EPS = 1e-6


class StudentTeacher:
    """A student checkpoint behind the teacher protocol (``load_teacher("student", ...)``).

    Args:
        checkpoint: the student's checkpoint (Phase 2's ``best.pt``).
        features: the folder of the stimuli's feature caches (``<stimulus>.npz``, as notebook 01 writes
            them: a media file ``clip.mp4`` is read from ``features/clip.npz``).
        device: where the student runs.
        rate_hz, hrf_offset_s: the rows' grid (TRIBE v2's: 1 Hz, BOLD 5 s after the stimulus).
        lead_in_s: feature seconds before each row (what the student's HRF needs).
        block_s: rows are predicted in blocks of this many seconds (windows the student was trained on).
    """

    def __init__(self, *, checkpoint: str | Path, features: str | Path, device: str = "cpu", rate_hz: float = 1.0,
                 hrf_offset_s: float = 5.0, lead_in_s: float = 16.0, block_s: float = 100.0):
        from tinytribe._io import sha256_file
        from tinytribe.model.checkpoint import load_checkpoint

        self.path, self.features = Path(checkpoint), Path(features)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: student checkpoint not found")
        if not self.features.is_dir():
            raise FileNotFoundError(f"{self.features}: feature folder not found (notebook 01 writes it)")
        self.model, ck = load_checkpoint(self.path, map_location=device)
        self.model.to(device)
        self.device, self.lead_in_s, self.block_s = device, lead_in_s, block_s
        digest = sha256_file(self.path)
        score = ck.metrics.get("score", math.nan)
        self.origin = {"type": "student", "checkpoint": str(self.path), "checkpoint_sha256": digest,
                       "phase": ck.phase, "step": ck.step, "score": float(score)}
        self.info = TeacherInfo(id=STUDENT_TEACHER, revision=f"{digest[:12]}-{ck.phase}-step{ck.step}",
                                space=self.model.config.space, rate_hz=rate_hz, hrf_offset_s=hrf_offset_s)

    def predict(self, media: Path, start_s: float, end_s: float) -> TeacherOutput:
        import torch

        from tinytribe.model.timegrid import TimeGrid

        path = self.features / f"{Path(media).stem}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no feature cache for {Path(media).name} (extract its features "
                                    f"with notebook 01 first)")
        fc = FeatureCache.load(path)
        info = self.info
        times = grid_times(start_s, end_s, info.rate_hz)
        rows = []
        per_block = max(1, int(self.block_s * info.rate_hz))
        for k in range(0, times.size, per_block):
            t = times[k:k + per_block]
            bold = t + info.hrf_offset_s
            i0 = math.floor((bold[0] - self.lead_in_s - fc.t0_s) * fc.rate_hz + EPS)
            i1 = math.ceil((bold[-1] + 1.0 / info.rate_hz - fc.t0_s) * fc.rate_hz - EPS)
            lo, hi = max(i0, 0), min(i1, fc.n_steps)
            feats, masks = {}, {}
            for m in MODALITIES:
                d = self.model.config.input_dims[MODALITIES.index(m)]
                x = np.zeros((i1 - i0, d), np.float32)
                keep = np.zeros(i1 - i0, bool)
                if m in fc.features and hi > lo:
                    x[lo - i0:hi - i0] = fc.model_input(m, lo, hi)
                    keep[lo - i0:hi - i0] = fc.masks[m][lo:hi]
                feats[m], masks[m] = torch.from_numpy(x)[None], torch.from_numpy(keep)[None]
            available = torch.tensor([[m in fc.features and bool(fc.masks[m].any()) for m in MODALITIES]])
            grid = TimeGrid(torch.from_numpy(bold)[None].double(), 1.0 / info.rate_hz)
            with torch.no_grad():
                out = self.model({m: x.to(self.device) for m, x in feats.items()}, available.to(self.device),
                                 torch.tensor([fc.t0_s + i0 / fc.rate_hz], dtype=torch.float64),
                                 {"rows": grid}, masks={m: k.to(self.device) for m, k in masks.items()})
            rows.append(out.responses["rows"][0].float().cpu().numpy())
        V = self.model.config.n_outputs
        preds = np.concatenate(rows) if rows else np.zeros((0, V), np.float32)
        return TeacherOutput(predictions=preds, times_s=times, activations={}, activation_times_s={},
                             events=[dict(self.origin)])

    def close(self) -> None:
        self.model = None


def pseudo_stimuli(manifest_path: str | Path) -> set[str]:
    """The stimuli a student teacher job has done chunks of."""
    return {Path(it.source).stem for it in Manifest.load(manifest_path).items if it.status == "done" and it.output}


def use_pseudo_labels(study, manifest_path: str | Path, *, replace: bool = False, only: set[str] | None = None):
    """A copy of a loaded study in which the done chunks of a student teacher job are the teacher
    outputs of their stimuli.

    Args:
        study: a :class:`~tinytribe.data.study.LoadedStudy` (its stimuli must include the chunks').
        manifest_path: the teacher job's manifest (its chunk files beside it, as the job writes them).
        replace: also replace a real teacher's outputs (a held-out experiment); by default a stimulus
            that has real teacher outputs keeps them and only stimuli without any take pseudo-labels.
        only: use them on these stimuli only (Phase 3: its training split's); None: all the chunks'.

    Raises:
        ValueError: the manifest's chunks are not a student's, or name no stimulus of the study.
    """
    from tinytribe.data.study import zscore_runs
    from tinytribe.teacher.cache import stitch_chunks

    manifest_path = Path(manifest_path)
    m = Manifest.load(manifest_path)
    by_stimulus: dict[str, list[Path]] = {}
    for it in m.items:
        if it.status == "done" and it.output:
            by_stimulus.setdefault(Path(it.source).stem, []).append(manifest_path.parent / it.output)
    unknown = sorted(set(by_stimulus) - set(study.stimuli))
    if unknown:
        raise ValueError(f"{manifest_path}: chunks of stimulus {unknown[0]!r}, which study {study.study.name} lacks")
    if not by_stimulus:
        raise ValueError(f"{manifest_path}: no done chunk to use")
    stimuli, specs = dict(study.stimuli), dict(study.study.stimuli)
    for sid, paths in sorted(by_stimulus.items()):
        if (study.stimuli[sid].teacher is not None and not replace) or (only is not None and sid not in only):
            continue
        chunks = [TeacherChunk.load(p) for p in paths]
        if chunks[0].teacher.get("id") != STUDENT_TEACHER:
            raise ValueError(f"{paths[0]}: made by {chunks[0].teacher.get('id')!r}, not a student "
                             f"({STUDENT_TEACHER}): attach a real teacher's outputs to the study instead")
        tc = stitch_chunks(chunks)
        tc.predictions = zscore_runs(tc.predictions.astype(np.float32))   # as load_study does for a teacher
        stimuli[sid] = dataclasses.replace(study.stimuli[sid], teacher=tc)
        specs[sid] = dataclasses.replace(study.study.stimuli[sid], teacher=[str(p.resolve()) for p in sorted(paths)])
    return dataclasses.replace(study, stimuli=stimuli, study=dataclasses.replace(study.study, stimuli=specs))


def pseudo_label(checkpoint: str | Path, media: list[str | Path], features: str | Path, out_dir: str | Path, *,
                 media_root: str | Path, space: str | None = None, chunk_s: float = 150.0, budget=None,
                 device: str = "cpu", progress: bool = True) -> Path:
    """Run a student over media as a teacher job (resumable: the manifest says what is done).

    Args:
        checkpoint: the student (Phase 2's ``best.pt``).
        media: the media files to pseudo-label (their feature caches must be in ``features``).
        features: the feature-cache folder.
        out_dir: where ``manifest.json`` and the chunks (``teacher/``) go.
        media_root: the folder media paths are stored relative to.
        space: the cache's space (default: the student's).
        chunk_s: seconds of stimulus per manifest item.
        budget: a :class:`~tinytribe.budget.SessionBudget` (None: no limit).

    Returns:
        the manifest's path, for :func:`use_pseudo_labels` or ``fmri.pseudo_labels``.
    """
    from tinytribe import manifest as mf
    from tinytribe.budget import SessionBudget
    from tinytribe.runner import run_job
    from tinytribe.teacher.cache import teacher_job_work
    from tinytribe.teacher.protocol import load_teacher

    out_dir = Path(out_dir)
    path = out_dir / "manifest.json"
    if not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        mf.build_manifest([str(p) for p in media], job="teacher", chunk_s=chunk_s, relative_to=media_root).save(path)
    teacher = load_teacher("student", checkpoint=checkpoint, features=features, device=device)
    try:
        run_job(path, teacher_job_work(media_root, out_dir / "teacher", teacher, space=space or teacher.info.space),
                budget=budget or SessionBudget.starting_now(None), progress=progress)
    finally:
        teacher.close()
    return path
