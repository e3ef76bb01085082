"""Diversity sampling: which stretches of a large video collection the teacher should see.

The design's step 5b. Teacher inference is the expensive part; the tiny-backbone features are
cheap and already cached for every candidate. So:

1. cut every stimulus's cached features into segments of ``segment_s`` (30 s);
2. describe each segment by the mean of each modality's features where it has content, each
   modality L2-normalised and weighted equally, plus how much of the segment has that modality;
3. cluster the segments with k-means (K configurable) and keep the ``per_cluster`` (1-2) segments
   nearest each centre;
4. write a teacher manifest of those segments.

The design's step 4 -- "interpolated pseudo-labels" for the segments left out -- is not built: a
teacher output interpolated between two unrelated segments that merely sit near each other in
feature space has no sound basis (brain responses are not linear in a 30 s mean of backbone
features, and the segments are not neighbours in time). The principled route to more targets is the
design's 5c: the student's own predictions on new video, weighted below real teacher outputs, once
the student is good enough (planned with the training phases).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinytribe.formats import MODALITIES, FeatureCache, Manifest, ManifestItem
from tinytribe.manifest import item_id
from tinytribe.provenance import provenance


@dataclass(frozen=True)
class Segment:
    stimulus_id: str
    source: str
    start_s: float
    end_s: float


def segment_descriptors(caches: list[FeatureCache], segment_s: float = 30.0, min_segment_s: float = 10.0
                        ) -> tuple[list[Segment], np.ndarray]:
    """Segments of every stimulus and one descriptor row per segment.

    A last piece shorter than ``min_segment_s`` is dropped (too little to represent).

    Returns:
        the segments and their descriptors, (n, sum of modality dims + number of modalities) float32.
    """
    segments, rows = [], []
    for fc in caches:
        steps = int(round(segment_s * fc.rate_hz))
        for i0 in range(0, fc.n_steps, steps):
            i1 = min(i0 + steps, fc.n_steps)
            if (i1 - i0) / fc.rate_hz < min_segment_s:
                continue
            parts, present = [], []
            for m in MODALITIES:
                if m not in fc.features:
                    continue
                x = fc.features[m][i0:i1].astype(np.float32)
                mask = fc.masks[m][i0:i1]
                mean = x[mask].mean(axis=0) if mask.any() else np.zeros(x.shape[1], np.float32)
                parts.append(mean / max(np.linalg.norm(mean), 1e-6))
                present.append(mask.mean())
            rows.append(np.concatenate(parts + [np.asarray(present, np.float32)]))
            segments.append(Segment(fc.stimulus_id, fc.source, fc.t0_s + i0 / fc.rate_hz, fc.t0_s + i1 / fc.rate_hz))
    if not rows:
        raise ValueError(f"no segment of at least {min_segment_s:g} s in {len(caches)} feature files")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise ValueError(f"feature files disagree in modalities or dimensions ({sorted(widths)} descriptor sizes): "
                         f"extract them all with the same backbones")
    return segments, np.stack(rows).astype(np.float32)


@dataclass
class Selection:
    """The chosen segments and how well they cover the collection."""

    segments: list[Segment]
    chosen: list[int]                 # indices into segments
    labels: np.ndarray                # cluster of each segment
    distance_to_chosen: np.ndarray    # each segment's distance to its nearest chosen segment
    random_distance: np.ndarray       # the same for random choices of as many segments, (draws, n)
    teacher_segment_s: float
    stats: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        s = self.stats
        return "\n".join([
            f"{s['segments']:.0f} segments ({s['hours']:.2f} h) in {s['clusters']:.0f} clusters; "
            f"chose {len(self.chosen)} ({s['chosen_hours'] * 60:.1f} min, {100 * s['chosen_fraction']:.1f} % of the time)",
            f"coverage: distance of a segment to the nearest chosen one: median {s['median_distance']:.3f}, "
            f"worst {s['max_distance']:.3f}; for random choices of as many segments: median "
            f"{s['random_median_distance']:.3f}, worst {s['random_max_distance']:.3f}",
            f"teacher compute: {s['teacher_hours'] * 60:.1f} min of stimulus through TRIBE v2 "
            f"(its {self.teacher_segment_s:g} s segments around the chosen ones)",
        ])


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.cluster.vq import kmeans2

    centres, labels = kmeans2(x.astype(np.float64), k, minit="++", seed=seed)
    return centres, labels


def select(segments: list[Segment], x: np.ndarray, *, k: int = 300, per_cluster: int = 2, seed: int = 0,
           teacher_segment_s: float = 100.0, random_draws: int = 20) -> Selection:
    """Cluster segment descriptors with k-means and choose ``per_cluster`` segments nearest each centre."""
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    n = len(segments)
    k = min(k, n)
    centres, labels = _kmeans(x, k, seed)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size == 0:  # k-means left this centre empty
            continue
        d = np.linalg.norm(x[members] - centres[c], axis=1)
        chosen += [int(i) for i in members[np.argsort(d, kind="stable")[:per_cluster]]]
    chosen = sorted(chosen, key=lambda i: (segments[i].source, segments[i].start_s))

    sq = (x.astype(np.float64) ** 2).sum(axis=1)

    def nearest(idx) -> np.ndarray:  # (n,) distance of every segment to the nearest of idx
        d2 = sq[:, None] + sq[None, idx] - 2.0 * (x @ x[idx].T)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    dist = nearest(chosen)
    rng = np.random.default_rng(seed)
    rand = np.array([nearest(rng.choice(n, len(chosen), replace=False)) for _ in range(random_draws)])
    grid = {(segments[i].source, np.floor(t / teacher_segment_s))
            for i in chosen for t in np.arange(segments[i].start_s, segments[i].end_s - 1e-6, 1.0)}
    hours = sum(s.end_s - s.start_s for s in segments) / 3600
    chosen_h = sum(segments[i].end_s - segments[i].start_s for i in chosen) / 3600
    stats = {"segments": n, "hours": hours, "clusters": int(len(np.unique(labels))), "chosen_hours": chosen_h,
             "chosen_fraction": chosen_h / hours, "median_distance": float(np.median(dist)),
             "max_distance": float(dist.max()), "random_median_distance": float(np.median(rand, axis=1).mean()),
             "random_max_distance": float(rand.max(axis=1).mean()),
             "teacher_hours": len(grid) * teacher_segment_s / 3600}
    return Selection(segments, chosen, labels, dist, rand, teacher_segment_s, stats)


def selection_manifest(sel: Selection, *, media_root: str | Path | None = None, max_attempts: int = 3) -> Manifest:
    """A ``teacher`` manifest with one item per chosen segment (sources relative to ``media_root``)."""
    items = []
    for i in sel.chosen:
        s = sel.segments[i]
        source = os.path.relpath(s.source, media_root) if media_root is not None else s.source
        items.append(ManifestItem(id=item_id(source, s.start_s), source=source, start_s=round(s.start_s, 3),
                                  end_s=round(s.end_s, 3)))
    return Manifest(job="teacher", chunk_s=max(s.end_s - s.start_s for s in sel.segments), items=items,
                    max_attempts=max_attempts, created_by=provenance())


def diversity_manifest(feature_files: list[str | Path], *, k: int = 300, per_cluster: int = 2,
                       segment_s: float = 30.0, seed: int = 0, media_root: str | Path | None = None,
                       teacher_segment_s: float = 100.0) -> tuple[Manifest, Selection]:
    """Steps 1-3 of the design's diversity sampling, from cached feature files to a teacher manifest."""
    caches = [FeatureCache.load(p) for p in feature_files]
    segments, x = segment_descriptors(caches, segment_s)
    sel = select(segments, x, k=k, per_cluster=per_cluster, seed=seed, teacher_segment_s=teacher_segment_s)
    return selection_manifest(sel, media_root=media_root), sel
