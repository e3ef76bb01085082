"""The teacher job: one manifest item = one window of one stimulus, predicted once, cached forever.

Chunk files go to ``<out>/<item id>.npz`` in the teacher-cache format (``docs/FORMATS.md`` §3):
predictions reduced to the cache's space at write time (fsaverage4 by default: the student's
target space, 4x smaller than fsaverage5), BOLD sample times, the two fusion activations and the
exact events the teacher saw. A chunk whose file was made from the same media bytes by the same
teacher revision into the same space is never predicted again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinytribe._io import sha256_file
from tinytribe.formats import FormatError, Manifest, ManifestItem, TeacherChunk, space_size
from tinytribe.provenance import provenance
from tinytribe.spaces import reduce_space
from tinytribe.teacher.protocol import Teacher, TeacherOutput, grid_times


def _check_output(out: TeacherOutput, teacher: Teacher, item: ManifestItem, duration_s: float) -> None:
    info = teacher.info
    want = grid_times(item.start_s, min(item.end_s, duration_s), info.rate_hz)
    where = f"teacher {info.id} on {item.id}"
    if out.predictions.shape != (want.size, space_size(info.space)):
        raise ValueError(f"{where}: predictions {out.predictions.shape}, expected ({want.size}, "
                         f"{space_size(info.space)}) -- rows missing (empty segments dropped?) or extra")
    if not np.allclose(out.times_s, want, atol=1e-6):
        raise ValueError(f"{where}: row times {out.times_s[:3]}... are not the 1/{info.rate_hz:g} s grid "
                         f"of [{item.start_s}, {item.end_s})")
    if set(out.activations) != set(info.activations):
        raise ValueError(f"{where}: activations {sorted(out.activations)}, expected {sorted(info.activations)}")


def is_current(path: Path, teacher: Teacher, item: ManifestItem, source_sha256: str, space: str) -> bool:
    """Whether ``path`` already holds this item's outputs from this teacher revision and media."""
    try:
        old = TeacherChunk.load(path)
    except (FormatError, OSError):
        return False
    return (old.source_sha256 == source_sha256 and old.space == space and old.start_s == item.start_s
            and old.end_s == item.end_s
            and old.teacher == {"id": teacher.info.id, "revision": teacher.info.revision})


def teacher_job_work(media_root: str | Path, out_dir: str | Path, teacher: Teacher, *, space: str = "fsaverage4",
                     durations: dict[str, float] | None = None) -> Callable[[ManifestItem], Path]:
    """Work for a ``teacher`` manifest (see ``tinytribe.runner.run_job``).

    Args:
        media_root: where the manifest's sources are.
        out_dir: where chunk files go.
        teacher: a loaded teacher.
        space: the cache's space (``fsaverage5``, ``fsaverage4``, ``schaefer-400``, ``schaefer-1000``).
        durations: media durations by item source, when known (saves probing each file).
    """
    from tinytribe.features.decode import probe_media

    media_root, out_dir = Path(media_root), Path(out_dir)
    space_size(space)  # an unknown space fails before any work
    hashes: dict[Path, str] = {}

    def work(item: ManifestItem) -> Path:
        src = media_root / item.source
        if not src.is_file():
            raise FileNotFoundError(f"{src}: media file not found")
        if src not in hashes:
            hashes[src] = sha256_file(src)
        out = out_dir / f"{item.id}.npz"
        if out.exists() and is_current(out, teacher, item, hashes[src], space):
            return out
        duration = (durations or {}).get(item.source) or probe_media(src).duration_s
        res = teacher.predict(src, item.start_s, item.end_s)
        _check_output(res, teacher, item, duration)
        info = teacher.info
        chunk = TeacherChunk(
            chunk_id=item.id, stimulus_id=src.stem, source=item.source, start_s=item.start_s, end_s=item.end_s,
            space=space, predictions=reduce_space(res.predictions, info.space, space),
            bold_times_s=res.times_s + info.hrf_offset_s, activations=res.activations,
            activation_times_s=res.activation_times_s, teacher={"id": info.id, "revision": info.revision},
            hrf_offset_s=info.hrf_offset_s, sample_width_s=1.0 / info.rate_hz, events=res.events,
            source_sha256=hashes[src], provenance=provenance())
        return chunk.save(out)

    return work


STITCH_KEYS = ("stimulus_id", "space", "teacher", "hrf_offset_s", "sample_width_s", "source_sha256")  # chunks agree


def stitch_chunks(chunks: Iterable[TeacherChunk]) -> TeacherChunk:
    """Join the chunks of one stimulus into one, in time order.

    Raises:
        ValueError: chunks of different stimuli, spaces or teachers, or overlapping rows.
    """
    chunks = sorted(chunks, key=lambda c: c.start_s)
    if not chunks:
        raise ValueError("no chunks to stitch")
    first = chunks[0]
    for c in chunks[1:]:
        for key in STITCH_KEYS:
            if getattr(c, key) != getattr(first, key):
                raise ValueError(f"chunk {c.chunk_id}: {key} {getattr(c, key)!r} differs from "
                                 f"{first.chunk_id}'s {getattr(first, key)!r}")
    cat = np.concatenate
    times = cat([c.bold_times_s for c in chunks])
    if times.size > 1 and not np.all(np.diff(times) > 0):
        raise ValueError(f"chunks of {first.stimulus_id} overlap in time")
    names = list(first.activations)
    return TeacherChunk(
        chunk_id=first.stimulus_id, stimulus_id=first.stimulus_id, source=first.source, start_s=first.start_s,
        end_s=chunks[-1].end_s, space=first.space, predictions=cat([c.predictions for c in chunks]),
        bold_times_s=times, activations={n: cat([c.activations[n] for c in chunks]) for n in names},
        activation_times_s={n: cat([c.activation_times_s[n] for c in chunks]) for n in names},
        teacher=first.teacher, hrf_offset_s=first.hrf_offset_s, sample_width_s=first.sample_width_s,
        events=[e for c in chunks for e in c.events], source_sha256=first.source_sha256,
        provenance=first.provenance)


def load_stimulus(manifest_path: str | Path, stimulus_id: str) -> TeacherChunk:
    """All done chunks of one stimulus in a teacher manifest, stitched."""
    manifest_path = Path(manifest_path)
    m = Manifest.load(manifest_path)
    items = [it for it in m.items if Path(it.source).stem == stimulus_id and it.status == "done"]
    if not items:
        raise ValueError(f"{manifest_path}: no done chunk of stimulus {stimulus_id!r}")
    return stitch_chunks(TeacherChunk.load(manifest_path.parent / it.output) for it in items)


@dataclass(frozen=True)
class Storage:
    """Bytes the teacher cache takes per hour of stimulus."""

    hours: float
    bytes: int

    @property
    def mb_per_hour(self) -> float:
        return self.bytes / 1e6 / max(self.hours, 1e-12)

    def line(self, label: str = "teacher cache") -> str:
        return (f"{label}: {self.bytes / 1e6:.1f} MB for {self.hours * 60:.1f} min of stimulus = "
                f"{self.mb_per_hour:.0f} MB per hour; 320 h would take {self.mb_per_hour * 320 / 1e3:.1f} GB")


def measured_storage(manifest_path: str | Path) -> Storage:
    """What the done chunks of a teacher manifest really take on disk."""
    manifest_path = Path(manifest_path)
    done = [it for it in Manifest.load(manifest_path).items if it.status == "done" and it.output]
    size = sum((manifest_path.parent / it.output).stat().st_size for it in done)
    return Storage(hours=sum(it.duration_s for it in done) / 3600, bytes=size)


def expected_storage(space: str, *, dtype_bytes: int = 2, rate_hz: float = 1.0,
                     activations: dict[str, int] | None = None, activation_rate_hz: float = 2.0) -> Storage:
    """Bytes per hour of stimulus from the array sizes alone (no file overhead)."""
    acts = activations if activations is not None else {"fusion_l4": 1152, "fusion_l6": 1152}
    per_s = rate_hz * space_size(space) * dtype_bytes + activation_rate_hz * sum(acts.values()) * dtype_bytes
    return Storage(hours=1.0, bytes=int(per_s * 3600))
