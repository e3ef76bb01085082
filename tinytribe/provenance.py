"""Which tinytribe made a file: version and git revision, recorded in every output."""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path

from tinytribe import __version__


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    """The git commit of the running tinytribe, or ``"unknown"``.

    A source checkout answers with ``git rev-parse HEAD`` (``+dirty`` when it has uncommitted
    changes); an install from a git URL answers from pip's ``direct_url.json``.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        try:
            rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return rev + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        direct = metadata.distribution("tinytribe").read_text("direct_url.json")
        if direct:
            commit = json.loads(direct).get("vcs_info", {}).get("commit_id")
            if commit:
                return commit
    except metadata.PackageNotFoundError:
        pass
    return "unknown"


def provenance() -> dict[str, str]:
    """``{"tinytribe_version": ..., "git_revision": ...}`` for the files this process writes."""
    return {"tinytribe_version": __version__, "git_revision": git_revision()}
