"""Where a run folder is kept between sessions: a mounted folder, an rclone remote, or Google Drive.

Every backend offers the same few operations on keys (POSIX paths relative to the run folder on the
remote). Uploads are atomic where the backend allows: a folder and rclone write a temporary name
and rename it; Drive makes a new revision of an existing file only when its upload completes.
Errors are :class:`RemoteError` with secrets redacted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from tinytribe._io import atomic_write, atomic_write_bytes
from tinytribe.secrets import redact


class RemoteError(RuntimeError):
    """A remote operation failed (network, server, quota); retrying may help."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class Remote(ABC):
    """A place that holds files by key."""

    description: str = "remote"

    @abstractmethod
    def list(self) -> dict[str, int]:
        """Every file under the root: ``{key: size in bytes}``."""

    @abstractmethod
    def upload(self, local: Path, key: str) -> None:
        """Copy a local file to ``key``, replacing it atomically where the backend allows."""

    @abstractmethod
    def download(self, key: str, local: Path) -> None:
        """Copy ``key`` to a local file, atomically (temporary file, then rename)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (backends override this with something cheaper than a full listing)."""
        return key in self.list()

    def read_bytes(self, key: str) -> bytes | None:
        """The content of a small file, or None when it does not exist."""
        if not self.exists(key):
            return None
        with tempfile.TemporaryDirectory() as d:
            self.download(key, Path(d) / "f")
            return (Path(d) / "f").read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "f").write_bytes(data)
            self.upload(Path(d) / "f", key)


def _copy_into(src: Path, f) -> None:
    with open(src, "rb") as s:
        shutil.copyfileobj(s, f, 1 << 20)


class FolderRemote(Remote):
    """A folder on a mounted filesystem, e.g. Google Drive under Colab's ``drive.mount``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.description = f"folder {self.root}"

    def list(self) -> dict[str, int]:
        if not self.root.exists():
            return {}
        return {p.relative_to(self.root).as_posix(): p.stat().st_size
                for p in self.root.rglob("*") if p.is_file() and not p.name.startswith(".tt-partial-")}

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def upload(self, local: Path, key: str) -> None:
        try:
            atomic_write(self.root / key, lambda f: _copy_into(local, f))
        except OSError as e:
            raise RemoteError(f"{self.description}: cannot write {key}: {e}") from None

    def download(self, key: str, local: Path) -> None:
        try:
            atomic_write(local, lambda f: _copy_into(self.root / key, f))
        except OSError as e:
            raise RemoteError(f"{self.description}: cannot read {key}: {e}") from None

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class RcloneRemote(Remote):
    """Any rclone remote (Google Drive's ``drive`` type, WebDAV, SFTP, S3, ...) through rclone-python.

    Args:
        path: ``<remote name>:<folder>``, e.g. ``gdrive:tinytribe/run1``.
        config_path: the ``rclone.conf`` to use (see :func:`rclone_from_secret`); None: rclone's default.
        timeout_s: network timeout per rclone call; retries are the caller's job (``RunSync``).
    """

    def __init__(self, path: str, config_path: str | Path | None = None, timeout_s: float = 20.0):
        if ":" not in path:
            raise ValueError(f"rclone path {path!r} must look like 'remote:folder'")
        if '"' in path:
            raise ValueError(f"rclone path {path!r} must not contain double quotes")
        self.path = path.rstrip("/")
        self.config_path = str(config_path) if config_path else None
        self.args = ["--retries 1", "--low-level-retries 2", f"--contimeout {timeout_s:g}s", f"--timeout {timeout_s:g}s"]
        if self.config_path:
            # on every command, not through rclone_python's Config: that is a process-wide singleton
            # which keeps the first path it is given, so a second remote would talk to the first's server
            if '"' in self.config_path:
                raise ValueError(f"rclone config path {self.config_path!r} must not contain double quotes")
            self.args.append(f'--config "{self.config_path}"')
        self.description = f"rclone {self.path}"

    def _run(self, command: str) -> str:
        from rclone_python import utils

        try:
            stdout, _ = utils.run_rclone_cmd(command, list(self.args))
        except Exception as e:  # RcloneException carries rclone's stderr
            detail = getattr(e, "error_msg", "") or str(e)
            raise RemoteError(f"{self.description}: {command.split()[0]} failed: {detail.strip().splitlines()[-1:]}") from None
        return stdout

    def _lsjson(self, folder: str, recursive: bool) -> list[dict]:
        import json

        try:
            out = self._run(f'lsjson {"--recursive " if recursive else ""}--files-only "{folder}"')
        except RemoteError as e:
            if "directory not found" in str(e):
                return []
            raise
        return json.loads(out or "[]")

    def list(self) -> dict[str, int]:
        return {f["Path"]: int(f["Size"]) for f in self._lsjson(self.path, True) if ".tt-partial-" not in f["Path"]}

    def exists(self, key: str) -> bool:
        parent, _, name = key.rpartition("/")
        return any(f["Path"] == name for f in self._lsjson(f"{self.path}/{parent}" if parent else self.path, False))

    def upload(self, local: Path, key: str) -> None:
        parent, _, name = key.rpartition("/")
        partial = f"{parent + '/' if parent else ''}.tt-partial-{uuid.uuid4().hex[:8]}-{name}"
        # --ignore-times: rclone would otherwise skip a replacement of the same size and time as the old file
        self._run(f'copyto --ignore-times "{local}" "{self.path}/{partial}"')
        self._run(f'moveto --ignore-times "{self.path}/{partial}" "{self.path}/{key}"')

    def download(self, key: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._run(f'copyto --ignore-times "{self.path}/{key}" "{tmp}"')
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        try:
            self._run(f'deletefile "{self.path}/{key}"')
        except RemoteError as e:
            if "not found" not in str(e):
                raise


def rclone_from_secret(remote_path: str, secret: str = "RCLONE_CONF") -> RcloneRemote:
    """An rclone remote configured from a secret holding the text of an ``rclone.conf``.

    The config is written to a private temporary folder (mode 0600), outside every output folder.
    """
    from tinytribe.secrets import get_secret

    text = get_secret(secret)
    if not text:
        raise RemoteError(f"secret {secret} is not set: add your rclone.conf text to Kaggle Secrets / Colab "
                          f"userdata under that name (README, 'On Kaggle')")
    folder = Path(tempfile.mkdtemp(prefix="tinytribe-rclone-"))
    path = folder / "rclone.conf"
    atomic_write_bytes(path, text.encode())
    path.chmod(0o600)
    return RcloneRemote(remote_path, config_path=path)
