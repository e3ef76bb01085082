"""Output spaces and the maps between them: fsaverage5 → fsaverage4 and → Schaefer parcels.

fsaverage meshes are icosahedral subdivisions: fsaverage5's first 2,562 vertices of each hemisphere
are the vertices of fsaverage4 (at the same places on the sphere), and every later vertex is the
midpoint of an fsaverage4 edge (``tests/test_spaces.py`` checks this on nilearn's fsaverage5
sphere). Reducing fsaverage5 to fsaverage4 is therefore a selection, with no resampling.

Parcels are averages over their vertices; label 0 (the medial wall) belongs to no parcel.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tinytribe.formats import SPACES, space_size

FSAVERAGE5_PER_HEMI = 10_242
FSAVERAGE4_PER_HEMI = 2_562
ATLAS_DIR = Path(__file__).parent / "assets" / "atlases"
# atlas name -> file stem in ATLAS_DIR (lh.<stem>.annot, rh.<stem>.annot); provenance in its README
ATLASES = {"schaefer-400": "schaefer_400", "schaefer-1000": "schaefer_1000", "hcp-mmp1": "hcp_mmp1", "yeo-7": "yeo_7"}
PARCELLATIONS = ("schaefer-400", "schaefer-1000")  # atlases that are also output spaces


def fsaverage4_indices() -> np.ndarray:
    """Indices of fsaverage4's 5,124 vertices among fsaverage5's 20,484 (left hemisphere first)."""
    return np.r_[0:FSAVERAGE4_PER_HEMI, FSAVERAGE5_PER_HEMI:FSAVERAGE5_PER_HEMI + FSAVERAGE4_PER_HEMI]


def read_annot_pair(lh: str | Path, rh: str | Path) -> tuple[np.ndarray, list[str]]:
    """Labels of both hemispheres of an fsaverage5 parcellation as one vector.

    Returns:
        ``(20484,)`` int labels, 0 for the medial wall / unlabelled, right-hemisphere labels numbered
        after the left's; and the parcel names, ``names[k - 1]`` for label ``k``.
    """
    import nibabel.freesurfer as fs

    out, names = [], []
    for path in (lh, rh):
        labels, _, hemi_names = fs.read_annot(str(path))
        if labels.shape != (FSAVERAGE5_PER_HEMI,):
            raise ValueError(f"{path}: {labels.shape[0]} vertices, expected {FSAVERAGE5_PER_HEMI} (fsaverage5)")
        labels = np.where(labels > 0, labels + len(names), 0)
        out.append(labels)
        names += [n.decode() if isinstance(n, bytes) else str(n) for n in hemi_names[1:]]
    return np.concatenate(out).astype(np.int32), names


@functools.cache
def load_atlas(name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A shipped fsaverage5 atlas: ``schaefer-400``, ``schaefer-1000``, ``hcp-mmp1`` (Glasser 360) or
    ``yeo-7``. Returns read-only ``(20484,)`` labels (0 = medial wall / unlabelled) and the names,
    ``names[k - 1]`` for label ``k``."""
    if name not in ATLASES:
        raise ValueError(f"no atlas {name!r}; choose from {sorted(ATLASES)}")
    stem = ATLASES[name]
    labels, names = read_annot_pair(ATLAS_DIR / f"lh.{stem}.annot", ATLAS_DIR / f"rh.{stem}.annot")
    labels.setflags(write=False)
    return labels, tuple(names)


def parcellation(space: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The fsaverage5 labels of a parcel space (``schaefer-400``, ``schaefer-1000``)."""
    if space not in PARCELLATIONS:
        raise ValueError(f"no parcellation for space {space!r}; choose from {sorted(PARCELLATIONS)}")
    labels, names = load_atlas(space)
    if len(names) != space_size(space):
        raise ValueError(f"{space}: {len(names)} parcels, expected {space_size(space)}")
    return labels, names


def parcel_means(x: np.ndarray, labels: np.ndarray, n_parcels: int | None = None) -> np.ndarray:
    """Average ``x`` (..., V) over the vertices of each label 1..n (label 0 is left out).

    Returns:
        (..., n_parcels) float32; a parcel with no vertex is NaN (never the case for shipped atlases).
    """
    labels = np.asarray(labels)
    if x.shape[-1] != labels.shape[0]:
        raise ValueError(f"data has {x.shape[-1]} vertices, the atlas {labels.shape[0]}")
    n = int(labels.max()) if n_parcels is None else n_parcels
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64, copy=False)
    keep = labels > 0
    sums = np.zeros((flat.shape[0], n + 1))
    for row, values in zip(sums, flat):
        row[:] = np.bincount(labels[keep], weights=values[keep], minlength=n + 1)
    counts = np.bincount(labels[keep], minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums[:, 1:] / counts[1:]
    return means.astype(np.float32).reshape(*x.shape[:-1], n)


def reduction(source: str, target: str) -> tuple[str, np.ndarray | None]:
    """How :func:`reduce_space` maps ``source`` onto a coarser ``target``, for code that applies it
    itself (a loss on GPU tensors): ``("same", None)``; ``("select", indices)`` of the source outputs;
    or ``("parcels", labels)``, the (V_source,) parcel label 1..n of each source output (0: none).

    fsaverage4 → a Schaefer parcellation averages the fsaverage4 vertices of each parcel (fsaverage4
    is a subset of fsaverage5's vertices, and every Schaefer-400/1000 parcel holds some of them).

    Raises:
        ValueError: the map does not exist (e.g. fsaverage4 → fsaverage5 is an upsampling).
    """
    if target == source:
        return "same", None
    if source == "fsaverage5" and target == "fsaverage4":
        return "select", fsaverage4_indices()
    if source in ("fsaverage5", "fsaverage4") and target in PARCELLATIONS:
        labels, _ = parcellation(target)
        return "parcels", labels if source == "fsaverage5" else labels[fsaverage4_indices()]
    known = sorted(SPACES)
    raise ValueError(f"no reduction from {source} to {target} (spaces: {', '.join(known)}; reductions go "
                     f"from fsaverage5 to fsaverage4, or from either to a Schaefer parcellation)")


def reduces(source: str, target: str) -> bool:
    """Whether responses in ``source`` map onto ``target`` by :func:`reduction` (a space onto itself too)."""
    try:
        reduction(source, target)
    except ValueError:
        return False
    return True


def reduce_space(x: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map responses (..., V) from ``source`` to a coarser ``target`` space (:func:`reduction`).

    fsaverage5 → fsaverage4 selects the shared vertices; fsaverage5 or fsaverage4 → schaefer-N averages
    parcels; a space onto itself returns ``x`` unchanged.

    Raises:
        ValueError: the map does not exist or ``x`` does not have ``source``'s size.
    """
    if x.shape[-1] != space_size(source):
        raise ValueError(f"data has {x.shape[-1]} outputs, {source} has {space_size(source)}")
    kind, index = reduction(source, target)
    if kind == "select":
        return x[..., index]
    if kind == "parcels":
        return parcel_means(x, index, space_size(target))
    return x


@functools.cache
def _nearest_fsaverage4_parent() -> np.ndarray:
    """For each fsaverage5 vertex, the index (into fsaverage4's 5,124) of the nearest fsaverage4 vertex
    on the sphere (itself for the shared vertices)."""
    from nilearn.datasets import load_fsaverage
    from scipy.spatial import cKDTree

    sphere = load_fsaverage("fsaverage5")["sphere"]
    out = []
    for h, hemi in enumerate(("left", "right")):
        xyz = np.asarray(sphere.parts[hemi].coordinates, np.float64)
        _, idx = cKDTree(xyz[:FSAVERAGE4_PER_HEMI]).query(xyz)
        out.append(idx + h * FSAVERAGE4_PER_HEMI)
    parent = np.concatenate(out)
    parent.setflags(write=False)
    return parent


def upsample_fsaverage4(x: np.ndarray) -> np.ndarray:
    """fsaverage4 values (..., 5124) on fsaverage5 (..., 20484): each vertex takes its nearest
    fsaverage4 vertex on the sphere (the shared vertices keep their own value). For pictures and for
    scoring fsaverage4 predictions against fsaverage5 data; say which space a score is in."""
    if x.shape[-1] != 2 * FSAVERAGE4_PER_HEMI:
        raise ValueError(f"data has {x.shape[-1]} outputs, fsaverage4 has {2 * FSAVERAGE4_PER_HEMI}")
    return x[..., _nearest_fsaverage4_parent()]


def has_surface(space: str) -> bool:
    """Whether values in ``space`` can be drawn on the fsaverage5 surface (meshes and parcellations;
    a ``custom:N`` space has no vertices)."""
    return space in ("fsaverage5", "fsaverage4") or space in PARCELLATIONS


def on_fsaverage5(x: np.ndarray, space: str) -> np.ndarray:
    """(..., V) values of a mesh or parcel space on fsaverage5's vertices, for pictures."""
    if space in PARCELLATIONS:
        return paint_parcels(x, space)
    return to_space(x, space, "fsaverage5")


def paint_parcels(x: np.ndarray, space: str) -> np.ndarray:
    """Parcel values (..., n_parcels) on fsaverage5's vertices (..., 20484): each vertex takes its
    parcel's value, NaN on the medial wall. For pictures: a parcel map is not a vertex-wise result."""
    labels, names = parcellation(space)
    if x.shape[-1] != len(names):
        raise ValueError(f"data has {x.shape[-1]} outputs, {space} has {len(names)}")
    padded = np.concatenate([np.full(x.shape[:-1] + (1,), np.nan), np.asarray(x, np.float64)], axis=-1)
    return padded[..., labels]


def to_space(x: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map (..., V) values between spaces: reductions as :func:`reduce_space`, fsaverage4 -> fsaverage5
    by :func:`upsample_fsaverage4`. Anything else is refused (say which space a score is in; parcels
    are drawn on a surface by :func:`paint_parcels`)."""
    if source == "fsaverage4" and target == "fsaverage5":
        return upsample_fsaverage4(x)
    return reduce_space(x, source, target)
