from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import TINY  # noqa: E402


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
