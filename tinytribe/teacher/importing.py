"""Import predictions that already exist (the design's "Option 0") into the teacher-cache format.

Before paying for a single teacher inference, look for predictions someone already made: your own
Algonauts 2025 submission, a lab's cached TRIBE v2 outputs. Accepted:

- ``.npy`` per episode: an ``(N, V)`` array, ``V`` = 20484 (fsaverage5), 5124 (fsaverage4), 400 or
  1000 (Schaefer parcels), one row per fMRI volume;
- ``.h5`` / ``.hdf5``: one dataset per episode (dataset name = episode), each ``(N, V)``;
- an Algonauts submission: a dict ``{subject: {episode: (N, 1000)}}`` saved with ``np.save``. Such a
  file is a pickle; it is read only with ``allow_pickle=True`` -- open pickles only from people you trust.

Rows are BOLD samples: row ``k`` stands for BOLD at ``first_bold_s + k * tr_s`` (Algonauts 2025:
``tr_s = 1.49``, ``first_bold_s = 0``) and is one TR wide, so the cache stores ``hrf_offset_s = 0`` and
``sample_width_s = tr_s``. Per-subject predictions go to ``<out>/<subject>/``. A done manifest
(``<out>/manifest.json``) lists every imported file, so the rest of the pipeline treats them like
teacher outputs it made itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe._io import sha256_file
from tinytribe.formats import SPACES, Manifest, ManifestItem, TeacherChunk
from tinytribe.provenance import provenance

ARRAY_SUFFIXES = (".npy", ".h5", ".hdf5")


def _space_of(n: int, where: str, space: str | None) -> str:
    if space is not None:
        if SPACES.get(space) != n:
            raise ValueError(f"{where}: {n} columns, but space {space} has {SPACES.get(space)}")
        return space
    for name, size in SPACES.items():
        if size == n:
            return name
    raise ValueError(f"{where}: {n} columns match no known space ({', '.join(f'{k} {v}' for k, v in SPACES.items())}); "
                     f"give space='custom:{n}'")


def read_predictions(path: str | Path, *, allow_pickle: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """``{subject or "": {episode: (N, V) array}}`` from a file or a folder of files."""
    path = Path(path)
    if path.is_dir():
        out: dict[str, dict[str, np.ndarray]] = {}
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in ARRAY_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no .npy or .h5 files")
        for p in files:
            for subject, episodes in read_predictions(p, allow_pickle=allow_pickle).items():
                for ep, a in episodes.items():
                    if ep in out.setdefault(subject, {}):
                        raise ValueError(f"{p}: episode {ep!r} already read from another file")
                    out[subject][ep] = a
        return out
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError:
            raise ImportError("reading .h5 predictions needs h5py: pip install h5py") from None
        with h5py.File(path, "r") as f:
            return {"": {name: np.asarray(f[name]) for name in f.keys() if isinstance(f[name], h5py.Dataset)}}
    if suffix != ".npy":
        raise ValueError(f"{path}: expected .npy, .h5 or a folder of them")
    try:
        a = np.load(path, allow_pickle=allow_pickle)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{path}: holds pickled objects (an Algonauts-style dict?); read it with "
                             f"allow_pickle=True if you trust its author") from None
        raise
    if a.dtype == object:  # np.save of a dict
        d = a.item()
        if not isinstance(d, dict) or not all(isinstance(v, dict) for v in d.values()):
            raise ValueError(f"{path}: expected a dict {{subject: {{episode: array}}}}")
        return {str(s): {str(e): np.asarray(x) for e, x in eps.items()} for s, eps in d.items()}
    return {"": {path.stem: a}}


def import_predictions(path: str | Path, out_dir: str | Path, *, tr_s: float, first_bold_s: float = 0.0,
                       teacher_id: str, revision: str = "imported", space: str | None = None,
                       allow_pickle: bool = False) -> Manifest:
    """Write every episode in ``path`` as a teacher-cache file and a done manifest beside them.

    Raises:
        ValueError: an array that is not 2-D, has NaN/Inf, or whose width matches no space; one line
            naming the file and episode. Nothing is written for a file that fails.
    """
    if tr_s <= 0:
        raise ValueError(f"tr_s must be > 0, got {tr_s}")
    out_dir = Path(out_dir)
    data = read_predictions(path, allow_pickle=allow_pickle)
    chunks = []
    for subject, episodes in sorted(data.items()):
        for ep, a in sorted(episodes.items()):
            where = f"{path} [{subject + '/' if subject else ''}{ep}]"
            if a.ndim != 2 or a.shape[0] == 0:
                raise ValueError(f"{where}: expected (volumes, outputs), got shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{where}: {int((~np.isfinite(a)).sum())} NaN/Inf values")
            sp = _space_of(a.shape[1], where, space)
            times = first_bold_s + np.arange(a.shape[0]) * tr_s
            rel = f"{subject}/{ep}.npz" if subject else f"{ep}.npz"
            chunks.append((rel, TeacherChunk(
                chunk_id=ep, stimulus_id=ep, source=ep, start_s=0.0, end_s=float(times[-1] + tr_s), space=sp,
                predictions=a, bold_times_s=times, activations={}, activation_times_s={},
                teacher={"id": f"{teacher_id}:{subject}" if subject else teacher_id, "revision": revision},
                hrf_offset_s=0.0, sample_width_s=tr_s, events=[{"type": "Imported", "filepath": str(path)}],
                provenance=provenance())))
    items = []
    for rel, chunk in chunks:  # validated all first: a bad episode writes nothing
        dest = chunk.save(out_dir / rel)
        items.append(ManifestItem(id=rel[:-4].replace("/", "__"), source=chunk.source, start_s=chunk.start_s,
                                  end_s=chunk.end_s, status="done", attempts=1, output=rel,
                                  output_sha256=sha256_file(dest)))
    m = Manifest(job="teacher", chunk_s=max(it.duration_s for it in items), items=items, created_by=provenance())
    m.save(out_dir / "manifest.json")
    return m
