"""The import contracts of .importlinter hold (STYLE.md: imports point down the flow), and importing
the package does no work."""

from __future__ import annotations

import shutil
import subprocess
import sys


def test_import_contracts(repo):
    exe = shutil.which("lint-imports") or str(repo / ".venv" / "bin" / "lint-imports")
    r = subprocess.run([exe, "--config", str(repo / ".importlinter")], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_import_is_cheap_and_side_effect_free(repo):
    code = ("import sys, tinytribe, tinytribe.formats, tinytribe.manifest, tinytribe.budget, tinytribe.runner,"
            " tinytribe.sync, tinytribe.doctor, tinytribe.secrets, tinytribe.model, tinytribe.features.extract,"
            " tinytribe.features.cache, tinytribe.features.backbones, tinytribe.train.phase2;"
            "heavy = [m for m in ('av', 'matplotlib', 'transformers', 'papermill', 'rclone_python', 'pydrive2', 'faster_whisper', 'sentence_transformers') if m in sys.modules];"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
