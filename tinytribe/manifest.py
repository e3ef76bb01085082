"""Resumable job manifests: build, claim under a lease, finish, retry, shard, merge, summarise.

A manifest (format in ``docs/FORMATS.md``) is one JSON file per job shard. Every change goes
through :func:`update`, which holds an exclusive lock on ``<manifest>.lock`` while it reads, changes
and atomically rewrites the file, so several worker processes on one machine can share a shard and a
process killed at any instant leaves a valid file. Collaborators on different machines (one Kaggle
account each) work on different shards and :func:`merge` the results.

Item ids carry their start time in whole seconds: ``<source stem>_<start:06d>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tinytribe.formats import FormatError, JobDefinition, Manifest, ManifestItem
from tinytribe.provenance import provenance


LEASE_S = 600.0       # an item's lease: a dead worker's item is handed out again within this
HEARTBEAT_S = 60.0    # how often a live worker renews it


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _started_at(pid: int) -> str | None:
    """When process ``pid`` started, as a token that changes with every new process of that pid: on
    Linux ``<pid namespace>.<clock ticks since boot>`` from ``/proc`` (a wall-clock step does not move
    it), elsewhere whole Unix seconds; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return f"{_pid_namespace()}.{int(fields[19])}"   # field 22 of stat: starttime
    except (OSError, IndexError, ValueError):
        pass
    import psutil

    try:
        return str(int(psutil.Process(pid).create_time()))
    except (psutil.Error, OSError):
        return None


def default_worker() -> str:
    """``host:pid:start``, unique among live workers and never reused: the start token tells a
    process from a later one that got the same pid (a new Kaggle container counts pids afresh)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started_at(os.getpid())}"


def worker_alive(worker: str | None) -> bool | None:
    """Whether a worker named by :func:`default_worker` still runs: False when it was on this host, in
    this pid namespace, and its process is gone (or the pid now belongs to a process started at another
    time); None when that cannot be told (another host or container, a name of the caller's choosing)."""
    parts = (worker or "").split(":")
    if len(parts) not in (2, 3) or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    token = parts[2] if len(parts) == 3 else ""
    if "." in token and token.split(".", 1)[0] != str(_pid_namespace()):
        return None   # another container with this host name: its pids are not ours to look up
    started = _started_at(int(parts[1]))
    if started is None:
        return False
    if token and token != started:
        if token.isdigit() and started.replace(".", "").isdigit() and "." in started:
            return None   # an older name in wall-clock seconds: not comparable with the /proc token
        return False
    return True


def item_id(source: str | Path, start_s: float) -> str:
    """``<stem>_<start in whole seconds, 6 digits>``, e.g. ``friends_s01e01_000150``."""
    return f"{Path(source).stem}_{int(math.floor(start_s)):06d}"


def chunk_windows(duration_s: float, chunk_s: float, min_last_s: float = 1.0) -> list[tuple[float, float]]:
    """Split ``[0, duration_s)`` into windows of ``chunk_s``; a last piece shorter than
    ``min_last_s`` joins the window before it, so no stimulus time is dropped."""
    if chunk_s <= 0:
        raise ValueError(f"chunk_s must be > 0, got {chunk_s}")
    starts = [i * chunk_s for i in range(max(1, math.ceil(duration_s / chunk_s - 1e-9)))]
    windows = [(s, min(s + chunk_s, duration_s)) for s in starts]
    if len(windows) > 1 and windows[-1][1] - windows[-1][0] < min_last_s:
        last = windows.pop()
        windows[-1] = (windows[-1][0], last[1])
    return windows


def build_manifest(sources: Iterable[str | Path], *, job: str, chunk_s: float, max_attempts: int = 3,
                   durations: dict[str, float | Exception] | None = None, relative_to: str | Path | None = None,
                   on_error: Callable[[str, Exception], None] | None = None) -> Manifest:
    """A manifest with one ``pending`` item per ``chunk_s`` window of each source.

    Args:
        sources: media paths (or ids, when ``durations`` gives their lengths).
        job: what the job does, e.g. ``"teacher"`` or ``"features"``.
        chunk_s: window length in seconds of stimulus time.
        durations: known durations by source; other sources are probed with PyAV.
        relative_to: store source paths relative to this folder (portable across machines).
        on_error: called with (source, error) for a source whose duration cannot be read; it then
            enters the manifest as one ``failed`` item with the reason (the summary, the exit line
            and ``retry-failed`` see it; fixing the file makes :func:`reconcile` pick it up). Without
            it the error propagates.
    """
    items: list[ManifestItem] = []
    seen: dict[str, str] = {}
    unreadable: list[tuple[str, str, Exception]] = []
    for src in sorted(str(s) for s in sources):
        stored = os.path.relpath(src, relative_to) if relative_to is not None else src
        try:
            made = source_items(src, stored, chunk_s, (durations or {}).get(src))
        except Exception as e:
            if on_error is None:
                raise
            on_error(src, e)
            unreadable.append((src, stored, e))
            continue
        stem = Path(src).stem
        if stem in seen:
            raise ValueError(f"{src}: same name as {seen[stem]}; item ids would collide (rename one)")
        seen[stem] = src
        items += made
    for src, stored, e in unreadable:   # recorded as failed, unless a readable file has its name (a subtitle beside a video)
        if Path(src).stem not in seen:
            seen[Path(src).stem] = src
            items.append(_unreadable(src, stored, chunk_s, e))
    return Manifest(job=job, chunk_s=chunk_s, items=items, max_attempts=max_attempts, created_by=provenance())


def _fingerprint(path: str | Path) -> tuple[int | None, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, round(st.st_mtime, 6)


QUICK_HASH_BYTES = 1 << 20


def quick_hash(path: str | Path) -> str | None:
    """sha256 of a file's size and its first and last MiB: reads 2 MiB whatever the file's size, and
    tells a re-encoded or replaced media file from one whose modification time alone changed."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.sha256(str(size).encode())
            h.update(f.read(QUICK_HASH_BYTES))
            if size > QUICK_HASH_BYTES:
                f.seek(max(size - QUICK_HASH_BYTES, QUICK_HASH_BYTES))
                h.update(f.read(QUICK_HASH_BYTES))
    except OSError:
        return None
    return h.hexdigest()


def source_items(path: str | Path, stored: str, chunk_s: float, duration_s: float | Exception | None = None
                 ) -> list[ManifestItem]:
    """The ``pending`` items of one media file (probed for its duration unless given; a given exception
    -- a transcript that cannot be read -- is raised), fingerprinted."""
    from tinytribe.features.decode import probe_media

    if isinstance(duration_s, Exception):
        raise duration_s
    duration = probe_media(path).duration_s if duration_s is None else duration_s
    size, mtime = _fingerprint(path)
    digest = quick_hash(path) if size is not None else None
    return [ManifestItem(id=item_id(path, start), source=stored, start_s=round(start, 3), end_s=round(end, 3),
                         source_size=size, source_mtime=mtime, source_hash=digest)
            for start, end in chunk_windows(duration, chunk_s)]


def _unreadable(path: str | Path, stored: str, chunk_s: float, error: Exception) -> ManifestItem:
    size, mtime = _fingerprint(path)
    return ManifestItem(id=item_id(path, 0.0), source=stored, start_s=0.0, end_s=float(chunk_s), status="failed",
                        attempts=1, last_error=f"{type(error).__name__}: {error}".splitlines()[0][:500],
                        source_size=size, source_mtime=mtime, source_hash=quick_hash(path) if size is not None else None,
                        note="unreadable when the manifest was made")


@dataclass(frozen=True)
class Coverage:
    """How much of a job definition's group the media folder holds."""

    group: str
    priority: int
    files: int
    hours: float
    target_hours: float | None
    missing: tuple[str, ...]
    off_duration: tuple[str, ...]  # ids whose duration differs from the expected by more than 20 %

    def line(self) -> str:
        target = f" of {self.target_hours:g} h target" if self.target_hours else ""
        miss = f", {len(self.missing)} listed stimuli missing" if self.missing else ""
        off = f", {len(self.off_duration)} with unexpected duration" if self.off_duration else ""
        return f"[{self.priority}] {self.group}: {self.files} files, {self.hours:.2f} h{target}{miss}{off}"


def _definition_files(defn: JobDefinition, media_root: Path) -> list[tuple]:
    """Per group in priority order: (group, its media files found, the stimuli it names by id, those missing)."""
    from tinytribe.features.decode import MEDIA_SUFFIXES

    all_media = {p.stem: p for p in sorted(media_root.rglob("*")) if p.suffix.lower() in MEDIA_SUFFIXES}
    out = []
    for group in sorted(defn.groups, key=lambda g: g.priority):
        if group.stimuli:
            wanted = {s.id: s for s in group.stimuli}
            files = [all_media[i] for i in wanted if i in all_media]
            missing = tuple(i for i in wanted if i not in all_media)
        else:
            folder = media_root / group.name
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in MEDIA_SUFFIXES) if folder.is_dir() else []
            wanted, missing = {}, ()
        out.append((group, files, wanted, missing))
    return out


def definition_media(defn: JobDefinition, media_root: str | Path) -> list[Path]:
    """The media files under ``media_root`` that a job definition asks for, in priority order: what
    :func:`reconcile` compares its manifest with (an episode added to a group folder each week)."""
    return [f for _, files, _, _ in _definition_files(defn, Path(media_root)) for f in files]


def build_from_definition(defn: JobDefinition, media_root: str | Path, *, max_attempts: int = 3,
                          on_error: Callable[[str, Exception], None] | None = None
                          ) -> tuple[Manifest, list[Coverage]]:
    """A manifest for the media under ``media_root`` that a job definition asks for.

    Items are ordered by group priority, so workers claim the most important stimuli first. Returns
    the manifest and, per group, what was found against the definition's target.
    """
    media_root = Path(media_root)
    items: list[ManifestItem] = []
    coverage = []
    for group, files, wanted, missing in _definition_files(defn, media_root):
        sub = build_manifest(files, job=defn.job, chunk_s=defn.chunk_s, relative_to=media_root, on_error=on_error)
        durations: dict[str, float] = {}
        for it in sub.items:
            durations[Path(it.source).stem] = max(durations.get(Path(it.source).stem, 0.0), it.end_s)
        off = tuple(i for i, d in durations.items() if i in wanted and wanted[i].expected_duration_s
                    and abs(d - wanted[i].expected_duration_s) > 0.2 * wanted[i].expected_duration_s)
        taken = {it.id for it in items}
        clash = next((it.id for it in sub.items if it.id in taken), None)
        if clash:
            raise ValueError(f"{media_root}: item {clash!r} appears in two groups; file names must be unique")
        items.extend(sub.items)
        coverage.append(Coverage(group=group.name, priority=group.priority, files=len(durations),
                                 hours=sum(durations.values()) / 3600, target_hours=group.target_hours,
                                 missing=missing, off_duration=off))
    m = Manifest(job=defn.job, chunk_s=defn.chunk_s, items=items, max_attempts=max_attempts, created_by=provenance())
    return m, coverage


# --------------------------------------------------------------------------------------------------
# Locked updates
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<path>.lock`` (POSIX ``flock``)."""
    lock_path = Path(str(path) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def update(path: str | Path) -> Iterator[Manifest]:
    """Lock, load, let the caller change the manifest, then save it atomically."""
    with locked(path):
        m = Manifest.load(path)
        yield m
        m.save(path)


def _stale(it: ManifestItem, now: float) -> bool:
    """A running item whose lease ran out, or whose worker is known dead (same host, process gone)."""
    return it.status == "running" and (it.lease_until is None or it.lease_until < now or worker_alive(it.worker) is False)


def _expire_leases(m: Manifest, now: float) -> None:
    for it in m.items:
        if _stale(it, now):
            it.status, it.worker, it.lease_until = "pending", None, None


def claim_next(path: str | Path, *, worker: str | None = None, lease_s: float = LEASE_S,
               now: Callable[[], float] = time.time) -> ManifestItem | None:
    """Hand the next ``pending`` item to ``worker`` under a lease of ``lease_s`` seconds.

    An item ``running`` under a live lease is never handed out; one whose lease has expired, or whose
    worker is dead (on this host, its process is gone: at once, without waiting for the lease),
    returns to ``pending`` first. Returns None when nothing is left to claim.
    """
    worker = worker or default_worker()
    with update(path) as m:
        t = now()
        _expire_leases(m, t)
        for it in m.items:
            if it.status == "pending":
                it.status, it.worker, it.lease_until = "running", worker, t + lease_s
                it.timings["claimed_at"] = t
                return replace(it, timings=dict(it.timings))
    return None


def _owned(m: Manifest, item_id: str, worker: str) -> ManifestItem:
    it = m.item(item_id)
    if it.status != "running" or it.worker != worker:
        raise RuntimeError(f"item {item_id!r} is not held by {worker!r} (status {it.status}, worker {it.worker})")
    return it


def renew_lease(path: str | Path, item_id: str, *, worker: str, lease_s: float,
                now: Callable[[], float] = time.time) -> None:
    """Extend a held lease (call it from long items)."""
    with update(path) as m:
        _owned(m, item_id, worker).lease_until = now() + lease_s


def complete(path: str | Path, item_id: str, *, worker: str, output: str | None = None,
             output_sha256: str | None = None, seconds: float | None = None,
             now: Callable[[], float] = time.time) -> None:
    """Mark a held item ``done`` with its output path, hash and time taken."""
    with update(path) as m:
        it = _owned(m, item_id, worker)
        it.status, it.worker, it.lease_until, it.last_error = "done", None, None, None
        it.output, it.output_sha256 = output, output_sha256
        it.attempts += 1
        it.timings["finished_at"] = now()
        if seconds is not None:
            it.timings["seconds"] = round(seconds, 4)


def fail(path: str | Path, item_id: str, *, worker: str, error: str, permanent: bool = False,
         now: Callable[[], float] = time.time) -> ManifestItem:
    """Record a failed attempt: back to ``pending`` while attempts remain, else ``failed``; a
    ``permanent`` failure (an unreadable file, a bad setting: retrying cannot help) is ``failed`` at once."""
    with update(path) as m:
        it = _owned(m, item_id, worker)
        it.attempts += 1
        it.last_error = error.splitlines()[0][:500] if error else "unknown error"
        it.worker, it.lease_until = None, None
        it.status = "failed" if permanent or it.attempts >= m.max_attempts else "pending"
        it.timings["failed_at"] = now()
        return replace(it)


def release(path: str | Path, item_id: str, *, worker: str) -> None:
    """Give a held item back unfinished (e.g. on Ctrl-C), without counting an attempt."""
    with update(path) as m:
        it = _owned(m, item_id, worker)
        it.status, it.worker, it.lease_until = "pending", None, None


def release_items(path: str | Path, *, worker: str | None = None, stale: bool = False,
                  now: Callable[[], float] = time.time) -> list[str]:
    """Send running items back to ``pending`` without counting an attempt: those of ``worker``, or
    with ``stale`` those whose lease ran out or whose worker is dead. Returns their ids.

    For a worker known to be gone on another machine (a killed Kaggle session) whose lease still runs."""
    if (worker is None) == (not stale):
        raise ValueError("release needs exactly one of worker=... or stale=True")
    with update(path) as m:
        t = now()
        out = [it for it in m.items if it.status == "running" and (it.worker == worker if worker else _stale(it, t))]
        for it in out:
            it.status, it.worker, it.lease_until = "pending", None, None
        return [it.id for it in out]


class Heartbeat:
    """Renews a held item's lease every ``every_s`` seconds from a background thread while the item is
    worked on, so a long item (a teacher chunk, a training epoch) never loses a live lease, and a dead
    worker's item comes back within one short lease.

        with Heartbeat(path, item.id, worker=w, lease_s=600, every_s=60):
            work(item)

    A renewal that finds the item taken from this worker stops the beat (``error`` says so); other
    failures (a full disk, a slow mount) are kept in ``error`` and the next beat tries again.
    """

    def __init__(self, path: str | Path, item_id: str, *, worker: str, lease_s: float = LEASE_S,
                 every_s: float = HEARTBEAT_S):
        import threading

        if not 0 < every_s < lease_s:
            raise ValueError(f"the heartbeat ({every_s} s) must come more often than the lease runs out ({lease_s} s)")
        self.path, self.item_id, self.worker, self.lease_s, self.every_s = path, item_id, worker, lease_s, every_s
        self.beats, self.error = 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{item_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                renew_lease(self.path, self.item_id, worker=self.worker, lease_s=self.lease_s)
                self.beats += 1
            except RuntimeError as e:   # the item is not held by this worker any more: stop beating
                self.error = f"{type(e).__name__}: {e}"
                return
            except Exception as e:   # noqa: BLE001 -- a passing fault (a full disk, a slow mount): beat again
                self.error = f"{type(e).__name__}: {e} (retrying)"

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def retry_failed(path: str | Path) -> int:
    """Return every ``failed`` item to ``pending`` with its attempts reset; returns how many."""
    with update(path) as m:
        failed = [it for it in m.items if it.status == "failed"]
        for it in failed:
            it.status, it.attempts = "pending", 0
        return len(failed)


# --------------------------------------------------------------------------------------------------
# Sharding and merging
# --------------------------------------------------------------------------------------------------

def shard_of(item_id: str, n: int) -> int:
    """Which of ``n`` shards an item belongs to: a hash of its id, so it is stable when items are
    added or removed and the same on every machine."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % n


def shard(m: Manifest, n: int) -> list[Manifest]:
    """Split a manifest into ``n`` shards (``shard i of n``), every item in exactly one."""
    if n < 1:
        raise ValueError(f"need at least one shard, got {n}")
    buckets: list[list[ManifestItem]] = [[] for _ in range(n)]
    for it in m.items:
        buckets[shard_of(it.id, n)].append(replace(it, timings=dict(it.timings)))
    return [replace(m, items=b, shard_index=i, shard_count=n) for i, b in enumerate(buckets)]


_RANK = {"done": 4, "gone": 3, "failed": 2, "running": 1, "pending": 0}


def _newer(a: ManifestItem, b: ManifestItem) -> ManifestItem:
    """The item state to keep when two copies of one item disagree. ``done`` always wins; among
    the rest, more attempts means more recent history, then the higher-ranked status."""
    if a.status == "done" or b.status == "done":
        return a if a.status == "done" else b
    return max((a, b), key=lambda it: (it.attempts, _RANK[it.status]))


def merge(*manifests: Manifest) -> Manifest:
    """Merge shards (or two copies of one shard) into one manifest.

    An item ``done`` in any input is ``done`` in the output: a merge never loses finished work.
    The inputs must describe the same job with the same chunking.
    """
    if not manifests:
        raise ValueError("nothing to merge")
    first = manifests[0]
    for m in manifests[1:]:
        if (m.job, m.chunk_s) != (first.job, first.chunk_s):
            raise ValueError(f"cannot merge job {m.job!r}/{m.chunk_s}s into {first.job!r}/{first.chunk_s}s")
    by_id: dict[str, ManifestItem] = {}
    for m in manifests:
        for it in m.items:
            if it.id in by_id and (by_id[it.id].source, by_id[it.id].start_s) != (it.source, it.start_s):
                raise ValueError(f"item {it.id!r} names different windows in the inputs")
            by_id[it.id] = _newer(by_id[it.id], it) if it.id in by_id else it
    items = [replace(it, timings=dict(it.timings)) for it in sorted(by_id.values(), key=lambda i: i.id)]
    return replace(first, items=items, shard_index=0, shard_count=1)


def merge_files(out: str | Path, inputs: Iterable[str | Path]) -> Manifest:
    """Merge manifest files into ``out`` (which may be one of the inputs), under ``out``'s lock."""
    with locked(out):
        loaded = [Manifest.load(p) for p in inputs]
        if Path(out).exists():
            loaded.append(Manifest.load(out))
        merged = merge(*loaded)
        merged.save(out)
    return merged


# --------------------------------------------------------------------------------------------------
# Reconciling a manifest with its media folder
# --------------------------------------------------------------------------------------------------

@dataclass
class Reconciled:
    """What :func:`reconcile` changed: media ``added``, ``changed`` (their items pending again),
    ``gone`` (their items marked, not deleted), ``unreadable`` ones, files ``hashed``, files whose
    check did not fit in the time budget (``deferred``: checked next session), and files left out
    because another file's live items have their ids (``collisions``, with the reason)."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    hashed: int = 0
    deferred: list[str] = field(default_factory=list)
    collisions: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"{len(self.added)} new", f"{len(self.changed)} changed", f"{len(self.gone)} gone",
                 f"{len(self.unreadable)} unreadable"]
        extra = f"; {len(self.deferred)} left for next session (time budget)" if self.deferred else ""
        extra += "".join(f"; not added: {c}" for c in self.collisions)
        return f"media folder: {', '.join(parts)} ({self.hashed} hashed){extra}"


def reconcile(path: str | Path, media_root: str | Path, *, media: Iterable[str | Path] | None = None,
              durations: dict[str, float | Exception] | None = None, budget_s: float = 120.0,
              clock: Callable[[], float] = time.monotonic) -> Reconciled:
    """Bring a manifest built from a media folder up to date with the folder, keeping what is done.

    - a new file gets new ``pending`` items (an unreadable one a ``failed`` item with the reason);
    - a file whose size or modification time differs from its items' fingerprint gets its quick hash
      (:func:`quick_hash`, 2 MiB read); if that differs its items are rebuilt as ``pending``, attempts
      cleared, with the reason in ``note``; a file merely touched keeps its items;
    - a file that vanished marks its items ``gone`` (kept, with their outputs and former status;
      never claimed); if it comes back unchanged they get their status back, changed they are redone;
      a new file may take over the ids of gone or unreadable items (``a.avi`` converted to ``a.mp4``);
    - in a shard, only the shard's own share of a file's items is added.

    Only files whose fingerprint differs are read, within ``budget_s`` seconds (the rest wait for
    the next session), so a large collection is not re-read every session. Items held by a running
    worker are left alone.

    Args:
        path: the manifest; its item sources are paths relative to ``media_root``.
        media: the media files to reconcile with (default: the folder's media, by suffix).
        durations: known durations by ``str(file)`` (transcript-only stimuli), as :func:`build_manifest`.
    """
    from tinytribe.features.decode import MEDIA_SUFFIXES

    root = Path(media_root)
    files = sorted(Path(f) for f in media) if media is not None else sorted(
        f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
    report = Reconciled()
    start = clock()
    with update(path) as m:
        by_source: dict[str, list[ManifestItem]] = {}
        for it in m.items:
            by_source.setdefault(it.source, []).append(it)
        present = {os.path.relpath(f, root): f for f in files}

        def mine(items: list[ManifestItem]) -> list[ManifestItem]:   # a shard keeps its own share of a file's items
            return [it for it in items if m.shard_count == 1 or shard_of(it.id, m.shard_count) == m.shard_index]

        def gone(it: ManifestItem, why: str) -> None:
            if it.status != "gone":
                it.was, it.status = it.status, "gone"
            it.note, it.worker, it.lease_until = why, None, None

        for rel, old in by_source.items():   # vanished first: their ids are free for a file that replaces them
            if rel not in present and any(it.status not in ("gone", "running") for it in old):
                for it in old:
                    if it.status != "running":
                        gone(it, "source vanished from the media folder")
                report.gone.append(rel)
        for rel, f in present.items():
            old = by_source.get(rel)
            size, mtime = _fingerprint(f)
            if old and any(it.status == "running" for it in old):
                continue
            if old and all(it.source_size is None for it in old):   # a version-1 manifest: adopt the file as it is
                digest = quick_hash(f)
                report.hashed += 1
                for it in old:
                    it.source_size, it.source_mtime, it.source_hash = size, mtime, digest
                continue
            # an unreadable file sent back by retry-failed: probe it again for all its windows
            retried = bool(old) and any((it.note or "").startswith("unreadable") and it.status == "pending" for it in old)
            live = [it for it in old or [] if it.status != "gone"]   # gone windows of an older version do not count
            if live and not retried and all((it.source_size, it.source_mtime) == (size, mtime) for it in live):
                continue
            if old and clock() - start > budget_s:
                report.deferred.append(rel)
                continue
            if old and not retried:
                digest = quick_hash(f)
                report.hashed += 1
                ref = live or old   # all gone: the file came back, compared with what it was
                if {it.source_hash for it in ref} == {digest}:   # touched, or back unchanged: the same work
                    for it in ref:
                        it.source_size, it.source_mtime = size, mtime
                        if it.status == "gone":
                            it.status, it.was, it.note = it.was or "pending", None, "source came back unchanged"
                    continue
            try:
                fresh = mine(source_items(f, rel, m.chunk_s, (durations or {}).get(str(f))))
            except Exception as e:   # noqa: BLE001 -- an unreadable file is recorded, not raised
                fresh = mine([_unreadable(f, rel, m.chunk_s, e)])
                if fresh:
                    report.unreadable.append(rel)
            why = "came back changed" if old and all(it.status == "gone" for it in old) else "changed"
            taken = {it.id: it for it in m.items if it.source != rel}
            clash = [i for i in (it.id for it in fresh) if i in taken and taken[i].status != "gone"
                     and not (taken[i].note or "").startswith("unreadable")]
            if clash:   # a live item of another file has this id (the same name in another folder)
                report.collisions.append(f"{rel}: item id {clash[0]} is {taken[clash[0]].source}'s; rename one")
                continue
            fresh_ids = {it.id for it in fresh}
            at = next((k for k, it in enumerate(m.items) if it.source == rel), len(m.items))   # keep its claim priority
            before = [it for it in m.items[:at] if it.source != rel and it.id not in fresh_ids]
            after = [it for it in m.items[at:] if it.source != rel and it.id not in fresh_ids]
            for it in old or []:
                if it.id not in fresh_ids:
                    gone(it, f"source {why}: this window no longer exists")
                    after.append(it)
            for it in fresh:
                it.note = ("source retried: readable now" if retried else f"source {why}: redone") if old else it.note
            m.items = before + fresh + after
            if fresh or old:   # a shard's share of a new file may be nothing
                (report.changed if old else report.added).append(rel)
    return report


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """Counts by status and hours of stimulus time done and left."""

    total: int
    done: int
    pending: int
    running: int
    failed: int
    hours_done: float
    hours_left: float
    mean_item_s: float | None
    gone: int = 0

    def line(self) -> str:
        speed = f", {self.mean_item_s:.2f} s/item" if self.mean_item_s else ""
        gone = f", {self.gone} gone (media removed)" if self.gone else ""
        return (f"{self.done}/{self.total} done, {self.pending} pending, {self.running} running, "
                f"{self.failed} failed{gone}; {_hours(self.hours_done)} of media done, {_hours(self.hours_left)} left{speed}")


def _hours(h: float) -> str:
    return f"{h:.2f} h" if h >= 1 else f"{h * 60:.1f} min"


def summarize(m: Manifest) -> Summary:
    count = {s: 0 for s in _RANK}
    for it in m.items:
        count[it.status] += 1
    secs = [it.timings["seconds"] for it in m.items if it.status == "done" and "seconds" in it.timings]
    return Summary(
        total=len(m.items), done=count["done"], pending=count["pending"], running=count["running"],
        failed=count["failed"], gone=count["gone"],
        hours_done=sum(it.duration_s for it in m.items if it.status == "done") / 3600,
        hours_left=sum(it.duration_s for it in m.items if it.status in ("pending", "running")) / 3600,
        mean_item_s=sum(secs) / len(secs) if secs else None,
    )


def load_or_build(path: str | Path, build: Callable[[], Manifest]) -> Manifest:
    """Load the manifest at ``path``; build and save it first if there is none.

    A manifest that exists but cannot be read is never rebuilt over: the error stands.
    """
    path = Path(path)
    with locked(path):
        if not path.exists():
            build().save(path)
        return Manifest.load(path)


__all__ = [
    "Coverage", "FormatError", "Manifest", "ManifestItem", "Summary", "build_from_definition", "build_manifest", "chunk_windows", "claim_next",
    "complete", "fail", "item_id", "load_or_build", "locked", "merge", "merge_files", "release", "release_items",
    "Heartbeat", "worker_alive", "LEASE_S", "HEARTBEAT_S", "Reconciled", "reconcile", "source_items",
    "definition_media", "quick_hash",
    "renew_lease", "retry_failed", "shard", "shard_of", "summarize", "update",
]
