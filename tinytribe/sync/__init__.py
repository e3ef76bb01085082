"""Checkpoint and run-folder sync: restore at the start of a session, push as it goes.

A free-tier session loses its disk when it ends (Colab's ``/content``) or keeps only one output
folder (Kaggle's ``/kaggle/working``). ``RunSync`` keeps a run folder -- manifest, ledger, caches,
checkpoints -- on a remote that outlives sessions:

- ``restore()`` downloads what the remote has and the local folder lacks (or has differently);
- ``push()`` uploads what changed, skipping files the remote already has (same size and SHA-256),
  each upload atomic on the remote and retried with exponential back-off;
- a lock file with a lease on the remote keeps two sessions from writing one run folder.

The remote keeps ``.tinytribe-sync/index.json`` (key -> size, sha256) and ``.tinytribe-sync/lock.json``
(docs/FORMATS.md). Open a remote by URL with :func:`open_remote`: ``folder:/content/drive/MyDrive/run``,
``rclone:gdrive:tinytribe/run`` or ``gdrive:<folder id>``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tinytribe._io import atomic_write_json, sha256_file
from tinytribe.provenance import provenance
from tinytribe.sync.remotes import FolderRemote, RcloneRemote, Remote, RemoteError, rclone_from_secret

SYNC_DIR = ".tinytribe-sync"
INDEX_KEY = f"{SYNC_DIR}/index.json"
LOCK_KEY = f"{SYNC_DIR}/lock.json"
LOCAL_STATE = ".tinytribe-sync-state.json"  # local hash cache, never synced
INDEX_VERSION = 1


class SyncLockedError(RuntimeError):
    """Another live session holds the run folder."""


def open_remote(url: str) -> Remote:
    """A remote from a URL: ``folder:<path>`` (or a plain path), ``rclone:<remote>:<folder>``, ``gdrive:<folder id>``.

    rclone and Drive credentials come from secrets (``RCLONE_CONF``; ``GDRIVE_CLIENT_ID``,
    ``GDRIVE_CLIENT_SECRET``, ``GDRIVE_REFRESH_TOKEN``); without ``RCLONE_CONF`` rclone uses its own
    default config.
    """
    from tinytribe.secrets import get_secret

    kind, sep, rest = url.partition(":")
    if kind == "rclone" and sep:
        return rclone_from_secret(rest) if get_secret("RCLONE_CONF") else RcloneRemote(rest)
    if kind == "gdrive" and sep:
        from tinytribe.sync.gdrive import DriveRemote, drive_from_secrets

        return DriveRemote(drive_from_secrets(), rest)
    if kind == "folder" and sep:
        return FolderRemote(rest)
    if sep and len(kind) > 1:
        raise ValueError(f"sync remote {url!r}: unknown kind {kind!r} (folder:, rclone:, gdrive:)")
    return FolderRemote(url)


@dataclass
class SyncStats:
    transferred: list[str] = field(default_factory=list)
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def line(self, verb: str) -> str:
        return (f"{verb} {len(self.transferred)} files ({self.bytes / 1e6:.1f} MB) in {self.seconds:.1f} s, "
                f"{self.skipped} already in place")


def _excluded(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return rel.startswith(SYNC_DIR) or name.startswith(".") or name.endswith((".lock", ".tmp"))


class RunSync:
    """Keep a local run folder and a remote in step.

    Args:
        remote: where the run folder lives between sessions.
        local_dir: the run folder of this session.
        owner: this session's name in the lock (default: host, pid and a random id).
        lease_s: how long the lock holds without renewal (each push renews it); a session that died
            without releasing it blocks others this long at most.
        heartbeat_s: renew the lock from a background thread this often while it is held (None: only
            pushes renew it). With a short lease, a crashed session's lock frees within minutes while a
            live session that pushes rarely keeps it.
        attempts, backoff_s, max_backoff_s: retries of each remote operation, waiting backoff_s,
            2 * backoff_s, ... at most max_backoff_s between them.
    """

    def __init__(self, remote: Remote, local_dir: str | Path, *, owner: str | None = None, lease_s: float = 3600.0,
                 heartbeat_s: float | None = None, attempts: int = 6, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        self.remote, self.local = remote, Path(local_dir)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_s, self.attempts, self.backoff_s, self.max_backoff_s = lease_s, attempts, backoff_s, max_backoff_s
        self.sleep, self.clock = sleep, clock
        if heartbeat_s is not None and not 0 < heartbeat_s < lease_s:
            raise ValueError(f"the heartbeat ({heartbeat_s} s) must come more often than the lease runs out ({lease_s} s)")
        self.heartbeat_s, self.heartbeat_error = heartbeat_s, None
        self._beat: tuple | None = None

    # -- plumbing ----------------------------------------------------------------------------------

    def _retry(self, what: str, fn: Callable):
        for attempt in range(self.attempts):
            try:
                return fn()
            except (RemoteError, OSError) as e:
                if attempt == self.attempts - 1:
                    raise RemoteError(f"{what}: gave up after {self.attempts} attempts: {e}") from None
                self.sleep(min(self.backoff_s * 2 ** attempt, self.max_backoff_s))

    def _read_json(self, key: str) -> dict | None:
        data = self._retry(f"read {key}", lambda: self.remote.read_bytes(key))
        if data is None:
            return None
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            raise RemoteError(f"{self.remote.description}: {key} is not valid JSON") from None

    def _write_json(self, key: str, obj: dict) -> None:
        data = json.dumps(obj, indent=1).encode()
        self._retry(f"write {key}", lambda: self.remote.write_bytes(key, data))

    def _index(self) -> dict[str, dict]:
        idx = self._read_json(INDEX_KEY)
        if idx is None:
            return {}
        if idx.get("format_version") != INDEX_VERSION:
            raise RemoteError(f"{self.remote.description}: sync index format_version {idx.get('format_version')!r} "
                              f"is not supported (this tinytribe reads {INDEX_VERSION})")
        return idx["files"]

    def _save_index(self, files: dict[str, dict]) -> None:
        self._write_json(INDEX_KEY, {"format_version": INDEX_VERSION, "files": files, "updated_by": self.owner,
                                     "updated_at": self.clock(), "provenance": provenance()})

    def _local_files(self) -> dict[str, dict]:
        """``{key: {size, sha256}}`` of local files, hashing only files changed since the last call."""
        state_path = self.local / LOCAL_STATE
        try:
            cache = json.loads(state_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            cache = {}
        out, fresh = {}, {}
        for p in sorted(self.local.rglob("*")):
            rel = p.relative_to(self.local).as_posix()
            if not p.is_file() or _excluded(rel):
                continue
            st = p.stat()
            stamp = [st.st_size, st.st_mtime_ns]
            hit = cache.get(rel)
            digest = hit["sha256"] if hit and hit["stamp"] == stamp else sha256_file(p)
            fresh[rel] = {"stamp": stamp, "sha256": digest}
            out[rel] = {"size": st.st_size, "sha256": digest}
        if self.local.exists():
            atomic_write_json(state_path, fresh)
        return out

    # -- the lock ----------------------------------------------------------------------------------

    def acquire(self, force: bool = False) -> None:
        """Take the run folder's lock, or raise :class:`SyncLockedError` naming the live holder."""
        lock = self._read_json(LOCK_KEY)
        now = self.clock()
        # this very process on this run folder (a second "Run all" in the same kernel): take it over
        this_process = f"{socket.gethostname()}:{os.getpid()}:"
        mine = bool(lock) and lock["owner"].startswith(this_process) and self.owner.startswith(this_process) \
            and lock.get("folder") == str(self.local.resolve())
        if lock and lock["owner"] != self.owner and lock["lease_until"] > now and not force and not mine:
            until = dt.datetime.fromtimestamp(lock["lease_until"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            raise SyncLockedError(f"{self.remote.description}: the run folder is held by {lock['owner']} until {until}; "
                                  f"another session is writing it (if that session is dead, wait or use force=True)")
        self._write_json(LOCK_KEY, {"owner": self.owner, "acquired_at": now, "lease_until": now + self.lease_s,
                                    "folder": str(self.local.resolve())})
        back = self._read_json(LOCK_KEY)
        if not back or back["owner"] != self.owner:
            raise SyncLockedError(f"{self.remote.description}: lost the lock to {back and back['owner']}")
        if self.heartbeat_s and self._beat is None:
            import threading

            stop = threading.Event()

            def beat() -> None:
                while not stop.wait(self.heartbeat_s):
                    try:
                        self.renew()
                    except SyncLockedError as e:   # another session holds the folder now: stop; the next push says so
                        self.heartbeat_error = str(e)
                        return
                    except Exception as e:   # noqa: BLE001 -- the remote is slow or down: try again next beat
                        self.heartbeat_error = f"{type(e).__name__}: {e} (retrying)"

            thread = threading.Thread(target=beat, name="sync-lock-heartbeat", daemon=True)
            thread.start()
            self._beat = (stop, thread)

    def renew(self) -> None:
        lock = self._read_json(LOCK_KEY)
        if not lock or lock["owner"] != self.owner:
            raise SyncLockedError(f"{self.remote.description}: this session ({self.owner}) no longer holds the lock "
                                  f"(holder: {lock and lock['owner']})")
        lock["lease_until"] = self.clock() + self.lease_s
        self._write_json(LOCK_KEY, lock)

    def release(self) -> None:
        if self._beat is not None:
            stop, thread = self._beat
            stop.set()
            thread.join()
            self._beat = None
        lock = self._read_json(LOCK_KEY)
        if lock and lock["owner"] == self.owner:
            self._retry(f"delete {LOCK_KEY}", lambda: self.remote.delete(LOCK_KEY))

    # -- transfers ---------------------------------------------------------------------------------

    def restore(self) -> SyncStats:
        """Download every indexed file the local folder lacks or holds differently; verify hashes."""
        t0 = time.perf_counter()
        stats = SyncStats()
        local = self._local_files() if self.local.exists() else {}
        for key, meta in sorted(self._index().items()):
            if local.get(key) == meta:
                stats.skipped += 1
                continue
            dest = self.local / key

            def get() -> None:
                self.remote.download(key, dest)
                if sha256_file(dest) != meta["sha256"]:
                    dest.unlink(missing_ok=True)
                    raise RemoteError(f"{self.remote.description}: {key} arrived with the wrong SHA-256")

            self._retry(f"download {key}", get)
            stats.transferred.append(key)
            stats.bytes += meta["size"]
        stats.seconds = time.perf_counter() - t0
        return stats

    def push(self) -> SyncStats:
        """Upload what changed since the remote's index; renews the lock first."""
        t0 = time.perf_counter()
        self.renew()
        stats = SyncStats()
        index = self._index()
        for key, meta in self._local_files().items():
            if index.get(key) == meta:
                stats.skipped += 1
                continue
            self._retry(f"upload {key}", lambda: self.remote.upload(self.local / key, key))
            index[key] = meta
            self._save_index(index)  # after each file: an interrupted push keeps what it finished
            stats.transferred.append(key)
            stats.bytes += meta["size"]
        stats.seconds = time.perf_counter() - t0
        return stats

    def push_every(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> Callable[..., None]:
        """A callback (e.g. ``run_job``'s ``after_item``) that pushes at most once per ``seconds``."""
        last = [clock()]

        def maybe_push(*_args) -> None:
            if clock() - last[0] >= seconds:
                self.push()
                last[0] = clock()

        return maybe_push

    def round_trip(self, n_bytes: int = 1024) -> float:
        """Write, read back and delete ``n_bytes`` of random data; seconds taken (the doctor's check)."""
        t0 = time.perf_counter()
        key = f"{SYNC_DIR}/doctor-{uuid.uuid4().hex[:8]}.bin"
        data = os.urandom(n_bytes)
        self._retry("round trip write", lambda: self.remote.write_bytes(key, data))
        back = self._retry("round trip read", lambda: self.remote.read_bytes(key))
        self._retry("round trip delete", lambda: self.remote.delete(key))
        if back != data:
            raise RemoteError(f"{self.remote.description}: round trip returned different bytes")
        return time.perf_counter() - t0


__all__ = ["FolderRemote", "RcloneRemote", "Remote", "RemoteError", "RunSync", "SyncLockedError", "SyncStats",
           "open_remote"]
