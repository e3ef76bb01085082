"""Build the demo study folder, step by step (``notebooks/00_demo_study`` runs these steps, with
``01_extract_features`` and ``02_teacher_inference`` in between):

1. :func:`make_stimuli` -- media in ``<root>/stimuli``;
2. features through the normal extraction path into ``<root>/features`` (notebook 01);
3. :func:`simulate` -- fMRI runs, ``medial_wall.npy``, the generator and the ground truth, ``study.json``;
4. the demo teacher through the normal teacher job into ``<root>/teacher_job`` (notebook 02);
5. :func:`attach_teacher` -- the teacher chunks into ``study.json``, the teacher's r against the truth.

Sizes: ``small`` (the default; the whole demo pipeline in minutes on 2 CPU cores) and ``large``
(for benchmarks). Both have a teacher-only corpus (``corpus01`` ...: teacher outputs, no fMRI, three
times the fMRI stimuli's minutes, in the training split only), the shape of Phase 2's real data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tinytribe._io import atomic_write, atomic_write_json
from tinytribe.formats import FeatureCache, Manifest, Study, StudyRun, StudyStimulus, TeacherChunk
from tinytribe.provenance import provenance

from . import subjects as sim
from .stimuli import CORPUS, make_stimulus, plan_stimuli


@dataclass(frozen=True)
class DemoSize:
    n_stories: int
    seconds: float
    n_test: int
    repeats: int
    n_subjects: int
    n_corpus: int = 0             # teacher-only stimuli (no fMRI), 3x the fMRI stimuli's minutes
    corpus_seconds: float = 120.0


SIZES = {"small": DemoSize(n_stories=3, seconds=30.0, n_test=2, repeats=3, n_subjects=4, n_corpus=6,
                           corpus_seconds=120.0),
         "large": DemoSize(n_stories=12, seconds=90.0, n_test=3, repeats=4, n_subjects=8, n_corpus=18,
                           corpus_seconds=270.0)}



def _size(size: str) -> DemoSize:
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose from {sorted(SIZES)}")
    return SIZES[size]


def make_stimuli(root: str | Path, size: str = "small", seed: int = 0) -> list[Path]:
    """Render the demo stimuli into ``<root>/stimuli`` (existing files are kept)."""
    sz = _size(size)
    out = Path(root) / "stimuli"
    paths = []
    for i, spec in enumerate(plan_stimuli(sz.n_stories, sz.seconds, seed, n_test=sz.n_test, n_corpus=sz.n_corpus,
                                          corpus_seconds=sz.corpus_seconds)):
        path = out / f"{spec.id}{spec.suffix}"
        paths.append(path if path.exists() else make_stimulus(spec, out, seed * 1000 + i))
    return paths


def _npy(path: Path, a: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, a))


def simulate(root: str | Path, *, size: str = "small", seed: int = 0, space: str = "fsaverage4",
             config: sim.SimulationConfig | None = None) -> Study:
    """Simulate every subject's fMRI for the stimuli whose features are in ``<root>/features``.

    Writes ``fmri/<subject>/<stimulus>[_rep-<k>].npy`` in ``space`` (``fsaverage5`` or ``fsaverage4``),
    ``medial_wall.npy``, ``generator.json``/``.npz`` and ``truth/`` (true noise ceilings and region
    maps on fsaverage5), and ``study.json``.
    """
    from tinytribe.spaces import reduce_space

    root = Path(root)
    sz = _size(size)
    config = config or sim.SimulationConfig(n_subjects=sz.n_subjects, seed=seed)
    stimuli = {p.stem: p for p in sorted((root / "stimuli").iterdir()) if not p.name.startswith(".")}
    caches = {}
    for stim in stimuli:
        path = root / "features" / f"{stim}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: features missing -- run notebook 01 on {root / 'stimuli'} first")
        caches[stim] = FeatureCache.load(path)
    dims = {m: caches[next(iter(caches))].features[m].shape[1] for m in ("text", "audio", "video")}
    g = sim.draw_generator(config, dims)
    scanned = {s: fc for s, fc in caches.items() if not s.startswith(CORPUS)}   # the corpus has no fMRI
    sim.fit_norms(g, list(scanned.values()))
    sim.save_generator(g, root)
    adjacency = sim.mesh_adjacency()
    rng = np.random.default_rng(seed + 1)

    tests = sorted(s for s in stimuli if s.startswith("test"))
    subjects = [f"sub-{i + 1:02d}" for i in range(config.n_subjects)]
    sampled = {}  # (subject, stimulus) -> noiseless (n_TR, 20484)
    for si in range(config.n_subjects):
        for stim, fc in scanned.items():
            n = sim.n_trs(fc.n_steps / fc.rate_hz, config)
            sampled[si, stim] = sim.sample_tr(sim.response(g, fc, si), config.tr_s, n)
    runs, ceilings = [], []
    for si, subject in enumerate(subjects):
        var_test = np.mean([sampled[si, s].var(axis=0) for s in tests], axis=0)   # within-run signal variance
        snr = g.snr * g.subject_snr[si]
        responsive = snr > 0
        sigma = np.where(responsive, np.sqrt(var_test / np.where(responsive, snr, 1.0)), 1.0)
        ceilings.append(np.where(responsive, np.sqrt(var_test / (var_test + sigma**2)), 0.0))
        for stim in scanned:
            for rep in range(sz.repeats if stim in tests else 1):
                clean = sampled[si, stim]
                y = clean + sigma[None, :] * sim.noise(g, clean.shape[0], rng, adjacency)
                y[:, g.medial_wall] = 0.0
                rel = f"fmri/{subject}/{stim}" + (f"_rep-{rep}" if stim in tests else "") + ".npy"
                _npy(root / rel, reduce_space(y, "fsaverage5", space).astype(np.float32))
                runs.append(StudyRun(subject=subject, stimulus=stim, fmri=rel, tr_s=config.tr_s, first_bold_s=0.0,
                                     repeat=rep))
    truth = root / "truth"
    _npy(truth / "ceiling_fsaverage5.npy", np.stack(ceilings).astype(np.float32))
    _npy(truth / "ceiling.npy", reduce_space(np.stack(ceilings), "fsaverage5", space).astype(np.float32))
    _npy(truth / "regions_fsaverage5.npy", g.regions.astype(np.int16))
    _npy(root / "medial_wall.npy", reduce_space(g.medial_wall[None].astype(np.float32), "fsaverage5", space)[0] > 0.5)

    train = [s for s in caches if s not in tests and s != "story03"]   # the corpus too: teacher targets only
    study = Study(
        name="tiny-tribe-demo", space=space, subjects=subjects,
        stimuli={s: StudyStimulus(duration_s=round(fc.n_steps / fc.rate_hz, 3), features=f"features/{s}.npz",
                                  modalities=[m for m in ("text", "audio", "video") if fc.masks[m].any()],
                                  media=str(stimuli[s].relative_to(root)))
                 for s, fc in caches.items()},
        runs=runs, splits={"train": train, "val": [s for s in caches if s == "story03"], "test": tests},
        medial_wall="medial_wall.npy", provenance=provenance())
    study.save(root)
    atomic_write_json(root / "demo.json", {"size": size, "size_params": asdict(sz), "seed": seed, "space": space})
    return study


def attach_teacher(root: str | Path, manifest_path: str | Path) -> dict[str, float]:
    """List the done chunks of a teacher job in ``study.json`` and measure the teacher against the
    truth: per region, the mean over vertices of Pearson r between its predictions and the average
    subject's noiseless response at the same BOLD times. Saved to ``truth/teacher_r.json``."""
    from tinytribe.spaces import reduce_space

    root, manifest_path = Path(root), Path(manifest_path)
    study = Study.load(root)
    g = sim.load_generator(root)
    m = Manifest.load(manifest_path)
    per_stim: dict[str, list] = {}
    for it in m.items:
        if it.status == "done":
            per_stim.setdefault(Path(it.source).stem, []).append(it)
    preds, truth = [], []
    for stim, items in sorted(per_stim.items()):
        if stim not in study.stimuli:
            continue
        paths = [manifest_path.parent / it.output for it in sorted(items, key=lambda i: i.start_s)]
        study.stimuli[stim].teacher = [str(p.relative_to(root)) for p in paths]
        fc = FeatureCache.load(root / study.stimuli[stim].features)
        y = sim.response(g, fc, None, tail_s=12.0)
        for p in paths:
            c = TeacherChunk.load(p)
            steps = np.round(c.bold_times_s * sim.RATE_HZ).astype(int)
            keep = steps + 1 < y.shape[0]
            truth.append(reduce_space(0.5 * (y[steps[keep]] + y[steps[keep] + 1]), "fsaverage5", c.space))
            preds.append(c.predictions[keep].astype(np.float64))
    study.save(root)
    if not preds:
        raise ValueError(f"{manifest_path}: no done teacher chunk of a study stimulus")
    p, t = np.concatenate(preds), np.concatenate(truth)
    p, t = p - p.mean(0), t - t.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / np.sqrt((p**2).sum(0) * (t**2).sum(0))
    regions = reduce_space(g.regions[None].astype(np.float64), "fsaverage5", study.space)[0].astype(int)
    out = {name: float(np.nanmean(r[regions == k + 1])) for k, name in enumerate(sim.REGIONS)}
    out["all responsive"] = float(np.nanmean(r[regions != 0]))
    atomic_write_json(root / "truth" / "teacher_r.json", out)
    return out


def load_demo_info(root: str | Path) -> dict:
    return json.loads((Path(root) / "demo.json").read_text())


def audio_text_copy(root: str | Path, out: str | Path, *, name: str = "demo-stories") -> Path:
    """The demo study's runs presented as a second study without video -- the shape of Lebel 2023's
    spoken stories beside a film study, for Phase 3's study mixing. It shares the demo's files (paths
    relative to ``out``); its subjects are other people to a model (keys (``name``, subject)), though
    their simulated runs are the demo's own."""
    import os

    root, out = Path(root), Path(out)
    study = Study.load(root)

    def rel(p: str | None) -> str | None:
        return None if p is None else os.path.relpath(root / p, out)

    stimuli = {sid: StudyStimulus(duration_s=s.duration_s, features=rel(s.features), teacher=[rel(t) for t in s.teacher],
                                  modalities=["text", "audio"], words=rel(s.words), media=rel(s.media))
               for sid, s in study.stimuli.items()}
    runs = [StudyRun(subject=r.subject, stimulus=r.stimulus, fmri=rel(r.fmri), tr_s=r.tr_s, first_bold_s=r.first_bold_s,
                     bold_times=rel(r.bold_times), repeat=r.repeat) for r in study.runs]
    copy = Study(name=name, space=study.space, subjects=list(study.subjects), stimuli=stimuli, runs=runs,
                 splits=study.splits, medial_wall=rel(study.medial_wall), output_names=study.output_names,
                 provenance=provenance())
    out.mkdir(parents=True, exist_ok=True)
    copy.save(out)
    return out
