"""Shared fixtures. Expensive things (executed notebooks, later the demo study) are built once per run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tinytribe" / "assets" / "media"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes that import tinytribe from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable
