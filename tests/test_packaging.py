"""A wheel install works without the source tree: it ships the notebooks, the Kaggle kernels and every
data file of the package, and ``tinytribe notebooks 00_setup_and_plan`` (and Phase 2, which needs the
model configs) run from a fresh virtual environment.

The wheel is built the way pip builds one from PyPI: an sdist of the repository's files (``git
ls-files``: what ``pip install git+...`` clones) through setuptools' PEP 517 hook, then a wheel from
that sdist (so ``MANIFEST.in`` is tested too). It is installed into a new venv with ``--no-deps``; its
dependencies come from this test environment
through a ``.pth`` path line (pip must never download torch here), which does not run this
environment's editable-install hook, so ``import tinytribe`` finds the wheel's copy only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _source_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the repository's files")
    done = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                          check=True)
    return [f for f in done.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp / 'sdist')!r})"],
                   cwd=src, check=True, capture_output=True)
    sdist = next((tmp / "sdist").glob("tinytribe-*.tar.gz"))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(sdist)],
                   check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("tinytribe-*.whl"))
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True)
    return env


def _run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    path = f"{env / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                          env={**clean, "PATH": path, "VIRTUAL_ENV": str(env)})


def _installed(env: Path) -> Path:
    return next((env / "lib").glob("python*/site-packages/tinytribe"))


@pytest.mark.slow
def test_the_wheel_carries_every_file_of_the_package(wheel_env):
    data = {f for f in _source_files() if f.startswith("tinytribe/") and not f.endswith(".py")}
    assert data, "the package has data files (assets, model configs)"
    installed = _installed(wheel_env).parent
    missing = sorted(f for f in data if not (installed / f).is_file())
    assert not missing, f"not in the wheel: {missing}"
    modules = sorted(f for f in _source_files() if f.startswith("tinytribe/") and f.endswith(".py")
                     and not (installed / f).is_file())
    assert not modules, f"modules not in the wheel: {modules}"


@pytest.mark.slow
def test_the_wheel_ships_notebooks_and_kernels_and_imports_from_itself(wheel_env, tmp_path):
    probe = ("import json, tinytribe; from tinytribe import kaggle_push, resources; "
             "from jupyter_client.kernelspec import KernelSpecManager; "
             "print(json.dumps({'package': tinytribe.__file__, 'notebooks': str(resources.notebooks_dir()), "
             "'kernels': kaggle_push.kernel_names(), 'kernel_python': KernelSpecManager().get_kernel_spec("
             "'python3').argv[0]}))")
    done = _run(wheel_env, str(wheel_env / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["package"].startswith(str(wheel_env)) and "_bundled" in seen["notebooks"]
    assert not seen["notebooks"].startswith(str(ROOT))
    shipped = sorted(p.name for p in Path(seen["notebooks"]).glob("*.ipynb"))
    assert shipped == sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert seen["kernels"] == sorted(p.name for p in (ROOT / "kaggle" / "kernels").iterdir())
    assert Path(seen["kernel_python"]).parent == wheel_env / "bin"   # notebooks run on the wheel's Python
    staged = _run(wheel_env, "tinytribe", "kaggle", "push", "02_teacher_inference", "--user", "ana", "--dry-run",
                  "--stage-dir", str(tmp_path / "stage"), "--set", "sync_remote=folder:/x",
                  "--set", "tinytribe_source=tinytribe", cwd=tmp_path)
    assert staged.returncode == 0, staged.stderr
    assert (tmp_path / "stage" / "02_teacher_inference.ipynb").is_file()


@pytest.mark.slow
@pytest.mark.notebook
def test_tinytribe_notebooks_runs_from_a_wheel_install(wheel_env, tmp_path):
    done = _run(wheel_env, "tinytribe", "notebooks", "00_setup_and_plan", "--out", "executed",
                "-p", "run_dir=setup", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "executed 00_setup_and_plan" in done.stdout
    nb = json.loads((tmp_path / "executed" / "00_setup_and_plan.ipynb").read_text())
    assert nb["metadata"]["papermill"]["exception"] is None
    assert (tmp_path / "setup" / "manifest.json").is_file()
    assert "without encryption" not in done.stderr   # the kernels' own log stays out of the terminal


@pytest.mark.slow
@pytest.mark.notebook
def test_phase2_trains_from_a_wheel_install(wheel_env, demo_study, tmp_path):
    done = _run(wheel_env, "tinytribe", "notebooks", "04_phase2_kd", "--out", "executed",
                "-p", f"study_dirs=[\"{demo_study}\"]", "-p", "run_dir=phase2", "-p", "max_steps=2",
                "-p", "device=cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    from tinytribe.formats import Checkpoint

    ck = Checkpoint.load(tmp_path / "phase2" / "checkpoints" / "last.pt")
    assert ck.step == 2 and ck.config["name"] == "tiny-tribe-demo"   # the model config came from the wheel
