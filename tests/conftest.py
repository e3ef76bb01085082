"""Shared fixtures. Expensive things (executed notebooks, later the demo study) are built once per run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def demo_study(tmp_path_factory) -> Path:
    """The demo study, built once per test run by executing ``notebooks/00_demo_study`` (which runs
    notebooks 01 and 02 inside it). Tests must not change it: copy it (``broken_copy``) to break it.

    ``TINYTRIBE_DEMO_STUDY=<folder>`` reuses a study built before (for quick local reruns)."""
    reuse = os.environ.get("TINYTRIBE_DEMO_STUDY")
    if reuse and (Path(reuse) / "study.json").is_file() and (Path(reuse) / "truth" / "teacher_r.json").is_file():
        return Path(reuse)
    from tinytribe.pipeline import run_notebook

    base = tmp_path_factory.mktemp("demo")
    root = base / "study"
    run_notebook("00_demo_study", base / "executed", {"root": str(root)}, cwd=base)
    return root


@pytest.fixture(scope="session")
def story_study(tmp_path_factory) -> Path:
    """A one-story study with ROI time courses (``custom:6``, named) and a held-out time range
    (``tests/story_study.py``), built once per run with the real text backbone. Copy it to change it."""
    from story_study import build_story_study

    from tinytribe.features.extract import ExtractionConfig, FeatureExtractor

    return build_story_study(tmp_path_factory.mktemp("story") / "study", FeatureExtractor(ExtractionConfig(device="cpu")))


@pytest.fixture(scope="session")
def demo_checkpoint(demo_study, tmp_path_factory) -> Path:
    """A demo Phase 3 checkpoint (the tiny student, 3 steps on the demo study: it knows the demo's
    subjects, backbones and TR), built once per run. Fast, not good: for plumbing, not for scores."""
    from train.tiny import TINY

    from tinytribe.train import phase3

    run = phase3.setup([demo_study], tmp_path_factory.mktemp("checkpoint"), overrides=TINY + ["loop.max_steps=3"])
    return run.train(progress=False).last


@pytest.fixture(scope="session")
def ablation_checkpoints(demo_study, demo_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The ablation's rows on the demo, each a few steps of the tiny student: Phase 3 alone
    (``demo_checkpoint``), Phase 2 alone, Phase 2 → 3 and Phase 1 → 2 → 3. For plumbing, not scores."""
    from train.tiny import TINY

    from tinytribe.train import phase1, phase2, phase3

    root = tmp_path_factory.mktemp("ablation")
    opts = TINY + ["loop.max_steps=3"]

    p1 = phase1.setup([demo_study], root / "p1", overrides=opts + ["loop.batch_size=4"]).train(progress=False).last
    p2 = phase2.setup([demo_study], root / "p2", overrides=opts).train(progress=False).last
    p12 = phase2.setup([demo_study], root / "p12", overrides=opts, init_from=p1).train(progress=False).last
    p23 = phase3.setup([demo_study], root / "p23", overrides=opts, init_from=p2).train(progress=False).last
    p123 = phase3.setup([demo_study], root / "p123", overrides=opts, init_from=p12).train(progress=False).last
    return {"Phase 3 alone": demo_checkpoint, "Phase 2 alone": p2, "Phase 2 → 3": p23, "Phase 1 → 2 → 3": p123}


@pytest.fixture
def story_copy(story_study, tmp_path) -> Path:
    dst = tmp_path / "story"
    shutil.copytree(story_study, dst)
    return dst


@pytest.fixture
def broken_copy(demo_study, tmp_path):
    """A private copy of the demo study (without media) for tests that break it."""
    dst = tmp_path / "study"
    shutil.copytree(demo_study, dst, ignore=shutil.ignore_patterns("stimuli", "notebooks", "chunks"))
    return dst


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDav:
    """``rclone serve webdav`` of a folder on 127.0.0.1, with a client config naming it ``dav``."""

    def __init__(self, root: Path, conf_dir: Path):
        self.root, self.port = root, _free_port()
        root.mkdir(parents=True, exist_ok=True)
        password = "s3cr3t-dav-password"
        obscured = subprocess.run(["rclone", "obscure", password], capture_output=True, text=True, check=True).stdout.strip()
        self.conf_text = (f"[dav]\ntype = webdav\nurl = http://127.0.0.1:{self.port}\nvendor = other\n"
                          f"user = tt\npass = {obscured}\n")
        self.conf = conf_dir / "rclone.conf"
        self.conf.write_text(self.conf_text)
        self.password = password
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["rclone", "serve", "webdav", str(self.root), "--addr", f"127.0.0.1:{self.port}",
                                      "--user", "tt", "--pass", self.password], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rclone serve webdav did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def webdav(tmp_path):
    if shutil.which("rclone") is None:
        pytest.fail("rclone is not installed: scripts/setup.sh installs it (apt-get install rclone)")
    server = WebDav(tmp_path / "dav-root", tmp_path)
    yield server
    server.kill()
