"""Studies too large for memory: feature and teacher caches read window by window.

300 h of cached features, an fsaverage4 teacher and its activations come to about 30 GB in fp16 --
more than a free-tier machine's RAM. ``load_study(root, lazy=True)`` keeps only what is small in
memory (masks, timing channels, sample times) and reads a window's rows of the large arrays from the
cache files when :func:`~tinytribe.data.windows.window_item` asks for them, with ``os.pread`` at the
byte offsets the uncompressed ``.npz`` members sit at (each read opens and closes its file, so a
corpus of thousands of files holds no descriptors). Nothing is memory-mapped, so the resident memory
of a process stays that of its windows (the operating system's page cache does the caching).

    study = load_study("runs/corpus", lazy=True)
    data = WindowDataset(study, make_stimulus_windows(study, "train", length_s=150))
    loader = torch.utils.data.DataLoader(data, batch_size=8, num_workers=2, collate_fn=collate)

A lazily opened cache is not scanned for NaN/Inf (it was checked when written); its word list is
read when first used.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from tinytribe.formats import TEXT_TIMING, FeatureCache, FormatError, TeacherChunk, with_timing, words_from_arrays
from tinytribe.teacher.cache import STITCH_KEYS


class NpzArrays:
    """The members of an uncompressed ``.npz`` (``np.savez``), read by rows without loading them.

    Args:
        path: the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.members: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        self._fortran: set[str] = set()
        try:
            with zipfile.ZipFile(self.path) as z, open(self.path, "rb") as f:
                for info in z.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    if info.compress_type != zipfile.ZIP_STORED:
                        raise FormatError(f"{self.path}: member {info.filename} is compressed; tinytribe writes "
                                          f"uncompressed .npz")
                    f.seek(info.header_offset)
                    local = f.read(30)
                    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + \
                        int.from_bytes(local[28:30], "little")
                    f.seek(start)
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read(f)
                    self.members[info.filename[:-4]] = (f.tell(), dtype, tuple(shape))
                    if fortran and len(shape) > 1:   # rows are not contiguous: such a member is read whole
                        self._fortran.add(info.filename[:-4])
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            raise FormatError(f"{self.path}: unreadable .npz ({type(e).__name__}: {e})") from None

    def _read(self, offset: int, n: int) -> bytes:
        out = np.empty(n, np.uint8)
        return self._read_into(out, offset).tobytes()

    def _read_into(self, out: np.ndarray, offset: int) -> np.ndarray:
        """Fill ``out`` from the file at ``offset``; the file is opened and closed around the read, so a
        corpus of thousands of files never holds descriptors (nor do forked workers inherit any)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            n = os.preadv(fd, [memoryview(out).cast("B")], offset)
        finally:
            os.close(fd)
        if n != out.nbytes:
            raise FormatError(f"{self.path}: file ended early (truncated?)")
        return out

    def shape(self, name: str) -> tuple[int, ...]:
        return self.members[name][2]

    def rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of member ``name`` (a fresh array)."""
        offset, dtype, shape = self.members[name]
        start, stop = max(start, 0), min(stop, shape[0] if shape else 0)
        if stop <= start:
            return np.zeros((0, *shape[1:]), dtype)
        if name in self._fortran:   # written column-major (older caches): read whole, then slice
            n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            return np.frombuffer(self._read(offset, n), dtype).reshape(shape, order="F")[start:stop].copy()
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        return self._read_into(np.empty((stop - start, *shape[1:]), dtype), offset + start * row)

    def whole(self, name: str) -> np.ndarray:
        """The whole member."""
        shape = self.members[name][2]
        if not shape:
            offset, dtype, _ = self.members[name]
            return np.frombuffer(self._read(offset, dtype.itemsize), dtype).reshape(())
        return self.rows(name, 0, shape[0])


class LazyFeatures:
    """A feature cache whose feature arrays stay on disk: what :func:`window_item` needs of a
    :class:`~tinytribe.formats.FeatureCache` (masks and timing in memory, features by rows)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = FeatureCache.read_meta(self.path)
        self._npz = NpzArrays(self.path)
        self.stimulus_id, self.rate_hz, self.t0_s = meta["stimulus_id"], meta["rate_hz"], meta["t0_s"]
        self.backbones, self.extraction, self.meta = meta["backbones"], meta["extraction"], meta
        mods = [k.split("__", 1)[1] for k in self._npz.members if k.startswith("feat__")]
        self.masks = {m: self._npz.whole(f"mask__{m}").astype(bool) for m in mods}
        self.timing = {k: self._npz.whole(f"timing__{k}").astype(np.float32) for k in TEXT_TIMING
                       if f"timing__{k}" in self._npz.members}
        self.dims = {m: self._npz.shape(f"feat__{m}")[1] for m in mods}
        lengths = {self._npz.shape(f"feat__{m}")[0] for m in mods} | {a.shape[0] for a in self.masks.values()}
        if len(lengths) != 1:
            raise FormatError(f"{self.path}: modalities and masks differ in length")
        self.n_steps = lengths.pop()
        self._words: list | None = None

    @property
    def words(self) -> list:
        """The word events (read on first use)."""
        if self._words is None:
            members = self._npz.members
            self._words = words_from_arrays(lambda name, default: self._npz.whole(name) if name in members
                                            else default)
        return self._words

    @property
    def features(self) -> dict[str, "_Rows"]:
        return {m: _Rows(self, m) for m in self.masks}

    def times(self) -> np.ndarray:
        return self.t0_s + np.arange(self.n_steps) / self.rate_hz

    def model_input(self, modality: str, start: int | None = None, stop: int | None = None,
                    dtype=np.float32) -> np.ndarray:
        """As :meth:`FeatureCache.model_input`, reading steps ``start:stop`` only."""
        lo, hi = start or 0, self.n_steps if stop is None else stop
        x = self._npz.rows(f"feat__{modality}", lo, hi).astype(dtype, copy=False)
        return with_timing(x, self.timing, slice(lo, hi), dtype) if modality == "text" else x


class _Rows:
    """``fc.features[m]`` of a lazy cache: its shape, and rows when sliced."""

    def __init__(self, fc: LazyFeatures, m: str):
        self.fc, self.m = fc, m
        self.shape = (fc.n_steps, fc.dims[m])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self.fc._npz.rows(f"feat__{self.m}", start, stop)
        return self.fc._npz.whole(f"feat__{self.m}")[key]

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return self.fc._npz.whole(f"feat__{self.m}").astype(dtype)


class LazyTeacher:
    """A stimulus's teacher chunks on disk, read by rows: sample and activation times in memory, the
    predictions (z-scored per output over the whole stimulus when asked, from statistics gathered in
    one streaming pass) and activations by the rows a window needs."""

    def __init__(self, paths: list[Path], zscore: bool = True):
        chunks = []
        for p in paths:
            meta = TeacherChunk.read_meta(p)
            chunks.append((meta, NpzArrays(p)))
        chunks.sort(key=lambda c: c[0]["start_s"])
        first = chunks[0][0]
        for meta, _ in chunks[1:]:
            for key in STITCH_KEYS:
                if meta.get(key) != first.get(key):
                    raise ValueError(f"teacher chunk {meta['chunk_id']}: {key} {meta.get(key)!r} differs from "
                                     f"{first['chunk_id']}'s {first.get(key)!r}")
        self.space, self.teacher, self.hrf_offset_s = first["space"], first["teacher"], first["hrf_offset_s"]
        self.sample_width_s = first.get("sample_width_s", 1.0)
        self._chunks = [npz for _, npz in chunks]
        self.bold_times_s = np.concatenate([npz.whole("bold_times_s") for npz in self._chunks]).astype(np.float64)
        if self.bold_times_s.size > 1 and not np.all(np.diff(self.bold_times_s) > 0):
            raise ValueError(f"teacher chunks of {first['stimulus_id']} overlap in time ({paths[0].parent})")
        self._row0 = np.cumsum([0] + [npz.shape("predictions")[0] for npz in self._chunks])
        names = [k.split("__", 1)[1] for k in self._chunks[0].members if k.startswith("act__")]
        self.activation_times_s = {n: np.concatenate([npz.whole(f"act_times__{n}") for npz in self._chunks])
                                   for n in names}
        self._act0 = {n: np.cumsum([0] + [npz.shape(f"act__{n}")[0] for npz in self._chunks]) for n in names}
        self._mean = self._inv_std = None
        if zscore:
            self._mean, self._inv_std = self._stats()

    def _gather(self, member: str, offsets: np.ndarray, mask: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(mask)
        parts = []
        for c, npz in enumerate(self._chunks):
            sel = idx[(idx >= offsets[c]) & (idx < offsets[c + 1])] - offsets[c]
            if sel.size:
                block = npz.rows(member, int(sel[0]), int(sel[-1]) + 1)
                parts.append(block if block.shape[0] == sel.size else block[sel - sel[0]])  # a window: contiguous
        if not parts:
            shape = self._chunks[0].shape(member)
            return np.zeros((0, *shape[1:]), np.float32)
        return np.concatenate(parts)

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        total, sq, n = 0.0, 0.0, 0
        for npz in self._chunks:
            x = npz.whole("predictions").astype(np.float64)
            total, sq, n = total + x.sum(0), sq + (x * x).sum(0), n + x.shape[0]
        mean = total / max(n, 1)
        std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0))
        return mean.astype(np.float32), np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0).astype(np.float32)

    def take_predictions(self, mask: np.ndarray, dtype=np.float32) -> np.ndarray:
        x = self._gather("predictions", self._row0, mask).astype(np.float32)
        if self._mean is not None:   # z-scores (a constant output becomes 0), in place
            x -= self._mean
            x *= self._inv_std
        return x.astype(dtype, copy=False)

    def take_activation(self, name: str, mask: np.ndarray, dtype=np.float32) -> np.ndarray:
        return self._gather(f"act__{name}", self._act0[name], mask).astype(dtype, copy=False)

    @property
    def activations(self) -> dict[str, None]:
        return {n: None for n in self.activation_times_s}

    @property
    def predictions(self) -> np.ndarray:
        """Every row (read whole: for evaluation, not for training windows)."""
        return self.take_predictions(np.ones(self.bold_times_s.shape[0], bool))


class WindowDataset:
    """A ``torch.utils.data.Dataset`` of window items (use ``collate`` as the DataLoader's ``collate_fn``).

    Args:
        study: a loaded study (``lazy=True`` for corpora larger than memory).
        windows: :class:`~tinytribe.data.windows.Window` s and / or :class:`StimulusWindow` s.
        lead_in_s, subjects: as :func:`~tinytribe.data.windows.window_item`.
    """

    def __init__(self, study, windows: list, *, lead_in_s: float = 16.0, subjects=None):
        self.study, self.windows, self.lead_in_s, self.subjects = study, list(windows), lead_in_s, subjects

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        from tinytribe.data.windows import window_item

        return window_item(self.study, self.windows[i], lead_in_s=self.lead_in_s, subjects=self.subjects)

