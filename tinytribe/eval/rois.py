"""Regions of interest, named as neuroscientists expect, on any mesh space.

Named ROIs (both hemispheres): early visual (HCP-MMP1 V1, V2, V3), auditory (A1, LBelt, MBelt,
PBelt, RI), language (44, 45, STSda, STSdp, STSva, STSvp, TPOJ1), default mode (Yeo-7 network 7),
and every Yeo-7 network. Add your own with :func:`rois_from_labels` (a vertex->label vector) or
:func:`rois_from_annot` (a FreeSurfer ``.annot`` pair on fsaverage5).

:func:`rois_for_space` gives the ROIs of any output space: the named ROIs on a mesh, the seven
networks of a Schaefer parcellation (from its parcel names), and one ROI per output of a
``custom:N`` space (named by the study's ``output_names``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe.formats import space_size
from tinytribe.spaces import PARCELLATIONS, fsaverage4_indices, load_atlas, parcel_means, parcellation, read_annot_pair

HCP_ROIS = {
    "early visual": ("V1", "V2", "V3"),
    "auditory": ("A1", "LBelt", "MBelt", "PBelt", "RI"),
    "language": ("44", "45", "STSda", "STSdp", "STSva", "STSvp", "TPOJ1"),
}
YEO_NETWORKS = ("visual", "somatomotor", "dorsal attention", "ventral attention", "limbic", "frontoparietal",
                "default")


def _to_space(mask5: np.ndarray, space: str) -> np.ndarray:
    if space == "fsaverage5":
        return mask5
    if space == "fsaverage4":
        return mask5[fsaverage4_indices()]
    raise ValueError(f"ROIs are defined on meshes (fsaverage5, fsaverage4), not on {space}")


def named_rois(space: str = "fsaverage5") -> dict[str, np.ndarray]:
    """The named ROIs as (V,) boolean masks in ``space``."""
    hcp, names = load_atlas("hcp-mmp1")
    bare = [n.removeprefix("L_").removeprefix("R_").removesuffix("_ROI") for n in names]
    out = {}
    for roi, areas in HCP_ROIS.items():
        out[roi] = _to_space(np.isin(hcp, [i + 1 for i, n in enumerate(bare) if n in areas]), space)
    yeo, ynames = load_atlas("yeo-7")
    for k, net in enumerate(YEO_NETWORKS, start=1):
        ids = [i + 1 for i, n in enumerate(ynames) if n == f"7Networks_{k}"]
        mask = _to_space(np.isin(yeo, ids), space)
        if net == "default":
            out["default mode"] = mask
        out[f"Yeo {k} {net}"] = mask
    return out


def schaefer_networks(space: str) -> dict[str, np.ndarray]:
    """The Yeo-7 networks of a Schaefer parcel space as (n_parcels,) masks, from the parcel names
    (``7Networks_LH_Vis_1`` belongs to ``Vis``), named like :func:`named_rois`'s networks."""
    from tinytribe.spaces import parcellation

    _, names = parcellation(space)
    short = {"Vis": "visual", "SomMot": "somatomotor", "DorsAttn": "dorsal attention",
             "SalVentAttn": "ventral attention", "Limbic": "limbic", "Cont": "frontoparietal", "Default": "default"}
    nets = np.array([n.split("_")[2] if n.count("_") >= 2 else "" for n in names])
    out = {}
    for k, (key, net) in enumerate(short.items(), start=1):
        mask = nets == key
        if net == "default":
            out["default mode"] = mask
        out[f"Yeo {k} {net}"] = mask
    return out


def rois_for_space(space: str, output_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The ROIs a study in ``space`` is summarised by: :func:`named_rois` on fsaverage5/4, the Schaefer
    networks on a parcel space, each output of a ``custom:N`` space on its own (``output_names`` or
    ``output 1`` ...)."""
    if space in ("fsaverage5", "fsaverage4"):
        return named_rois(space)
    if space in PARCELLATIONS:
        return schaefer_networks(space)
    n = space_size(space)
    names = output_names or [f"output {k + 1}" for k in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} output names for the {n} outputs of {space}")
    return {name: np.arange(n) == k for k, name in enumerate(names)}


def rois_from_labels(labels: np.ndarray, names: dict[int, str] | list[str] | None = None,
                     space: str = "fsaverage5") -> dict[str, np.ndarray]:
    """ROIs from a vertex->label vector (0 = none); ``names`` by label (a list: ``names[k - 1]``)."""
    labels = np.asarray(labels)
    n = space_size(space)
    if labels.shape != (n,):
        raise ValueError(f"label vector has shape {labels.shape}, expected ({n},) for {space}")
    out = {}
    for k in np.unique(labels[labels > 0]):
        if isinstance(names, dict):
            name = names.get(int(k), f"label {k}")
        elif names is not None:
            name = names[int(k) - 1]
        else:
            name = f"label {k}"
        out[name] = labels == k
    return out


def rois_from_annot(lh: str | Path, rh: str | Path, space: str = "fsaverage5") -> dict[str, np.ndarray]:
    """ROIs from a FreeSurfer ``.annot`` pair on fsaverage5 (one ROI per label, both hemispheres merged
    when the names match)."""
    labels, names = read_annot_pair(lh, rh)
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate(names, start=1):
        out[name] = out.get(name, np.zeros(labels.shape, bool)) | (labels == k)
    return {n: _to_space(m, space) for n, m in out.items() if m.any()}


def roi_means(values: np.ndarray, rois: dict[str, np.ndarray], cortex: np.ndarray | None = None) -> dict[str, float]:
    """Mean of (V,) ``values`` inside each ROI (and the cortex, when given), NaN ignored."""
    values = np.asarray(values, np.float64)
    out = {}
    for name, mask in rois.items():
        if mask.shape != values.shape:
            raise ValueError(f"ROI {name!r} has {mask.shape[0]} vertices, the values {values.shape[0]}")
        m = mask & cortex if cortex is not None else mask
        out[name] = float(np.nanmean(values[m])) if m.any() else float("nan")
    return out


def schaefer_vector(values: np.ndarray, space: str, n_parcels: int = 400) -> np.ndarray:
    """Per-parcel (Schaefer-``n``) means of (V,) values on fsaverage5 or fsaverage4 (medial wall out);
    values already in that parcel space are returned as they are."""
    if space == f"schaefer-{n_parcels}":
        return np.asarray(values, np.float64).astype(np.float32)
    labels, _ = parcellation(f"schaefer-{n_parcels}")
    if space == "fsaverage4":
        labels = labels[fsaverage4_indices()]
    elif space != "fsaverage5":
        raise ValueError(f"per-parcel vectors need fsaverage5 or fsaverage4 values, not {space}")
    if np.asarray(values).shape != labels.shape:
        raise ValueError(f"values have shape {np.asarray(values).shape}, expected {labels.shape} for {space}")
    return parcel_means(np.nan_to_num(np.asarray(values, np.float64)), labels, n_parcels)
