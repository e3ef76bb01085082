"""Kaggle kernels: every metadata file is valid for the Kaggle CLI and names a notebook that exists;
the push script stages a parameterised notebook and refuses what would fail on Kaggle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinytribe import kaggle_push as push

ROOT = Path(__file__).resolve().parent.parent
KERNELS = push.kernel_names()


def _notebook_parameters(name: str) -> set[str]:
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}


def test_the_teacher_feature_and_training_notebooks_have_kernels():
    assert {"01_extract_features", "02_teacher_inference", "03_phase1_selfsup", "04_phase2_kd",
            "05_phase3_fmri"} <= set(KERNELS)


@pytest.mark.parametrize("name", KERNELS)
def test_metadata_is_valid_and_names_a_notebook(name):
    meta, params, notebook = push.load_kernel(name)
    assert notebook == (ROOT / "notebooks" / f"{name}.ipynb").resolve()
    assert meta["language"] == "python" and meta["kernel_type"] == "notebook"
    assert meta["enable_internet"] == "true", "tinytribe and the weights are installed from the internet"
    assert isinstance(meta["dataset_sources"], list)
    unknown = set(params) - _notebook_parameters(name)
    assert not unknown, f"parameters.json sets what the notebook does not have: {unknown}"
    if name in ("01_extract_features", "02_teacher_inference", "03_phase1_selfsup", "04_phase2_kd",
                "05_phase3_fmri"):
        assert meta["enable_gpu"] == "true" and params["sync_remote"] == "REQUIRED"
        assert meta["machine_shape"] == "NvidiaTeslaT4"


def test_dry_run_stages_a_parameterised_notebook(tmp_path, capsys):
    import nbformat

    rc = push.main(["02_teacher_inference", "--user", "ana", "--stage-dir", str(tmp_path), "--dry-run",
                    "--set", "sync_remote=rclone:gdrive:tt/teacher",
                    "--set", "tinytribe_source=tinytribe @ git+https://github.com/ana/tiny-tribe@v0.1.0",
                    "--set", "reserve_s=1200"])
    assert rc == 0 and "dry run: kaggle kernels push -p" in capsys.readouterr().out
    meta = json.loads((tmp_path / "kernel-metadata.json").read_text())
    assert meta["id"] == "ana/tiny-tribe-02-teacher-inference" and meta["code_file"] == "02_teacher_inference.ipynb"
    assert meta["dataset_sources"] == ["ana/tiny-tribe-media"]
    nb = nbformat.read(tmp_path / "02_teacher_inference.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    i = next(k for k, t in enumerate(tags) if "injected-parameters" in t)
    assert "parameters" in tags[i - 1]
    ns: dict = {}
    exec(nb.cells[i - 1].source + "\n" + nb.cells[i].source, ns)  # the values the Kaggle run will see
    assert ns["teacher"] == "tribev2" and ns["reserve_s"] == 1200 and ns["account"] == "ana"
    assert ns["sync_remote"] == "rclone:gdrive:tt/teacher" and ns["media_dir"] == "/kaggle/input/tiny-tribe-media"


@pytest.mark.parametrize("command", [[sys.executable, str(ROOT / "kaggle" / "push.py")],
                                     [sys.executable, "-m", "tinytribe", "kaggle", "push"]])
def test_the_clone_script_and_the_cli_push_alike(command, tmp_path):
    done = subprocess.run([*command, "02_teacher_inference", "--user", "ana", "--stage-dir", str(tmp_path),
                           "--dry-run", "--set", "sync_remote=folder:/x",
                           "--set", "tinytribe_source=tinytribe @ git+https://github.com/ana/tiny-tribe"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "dry run: kaggle kernels push -p" in done.stdout and (tmp_path / "02_teacher_inference.ipynb").is_file()


def test_push_refuses_what_would_fail_on_kaggle(tmp_path, capsys):
    assert push.main(["02_teacher_inference", "--user", "ana", "--dry-run", "--stage-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "set sync_remote, tinytribe_source" in err and "starts with an empty /kaggle/working" in err
    assert push.main(["02_teacher_inference", "--user", "ana", "--set", "no_such=1", "--dry-run"]) == 2
    assert "--set no_such: not a Kaggle parameter" in capsys.readouterr().err
    assert push.main(["99_nothing", "--user", "ana", "--dry-run"]) == 2
    assert "no kernel '99_nothing'" in capsys.readouterr().err


def test_bad_metadata_is_named(tmp_path, monkeypatch):
    bad = tmp_path / "02_teacher_inference"
    bad.mkdir()
    meta = json.loads((push.kernels_dir() / "02_teacher_inference" / "kernel-metadata.json").read_text())
    (bad / "kernel-metadata.json").write_text(json.dumps({**meta, "id": "x/other-slug",
                                                          "code_file": str(ROOT / "notebooks" / "02_teacher_inference.ipynb")}))
    monkeypatch.setattr(push, "KERNELS", tmp_path)
    with pytest.raises(push.PushError, match="id must end in 'tiny-tribe-02-teacher-inference'"):
        push.load_kernel("02_teacher_inference")
    (bad / "kernel-metadata.json").write_text(json.dumps({**meta, "code_file": "gone.ipynb"}))
    with pytest.raises(push.PushError, match="code_file gone.ipynb does not exist"):
        push.load_kernel("02_teacher_inference")
    good = str(ROOT / "notebooks" / "02_teacher_inference.ipynb")
    (bad / "kernel-metadata.json").write_text(json.dumps({**meta, "code_file": good, "machine_shape": "TPUv9"}))
    with pytest.raises(push.PushError, match="names its GPU in machine_shape"):
        push.load_kernel("02_teacher_inference")
    (bad / "kernel-metadata.json").write_text(json.dumps({**meta, "code_file": good, "enable_gpu": "false"}))
    with pytest.raises(push.PushError, match="machine_shape 'NvidiaTeslaT4' on a kernel without a GPU"):
        push.load_kernel("02_teacher_inference")


def test_daily_workflow_pushes_a_known_kernel():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "kaggle-daily.yml").read_text())
    assert wf[True]["schedule"][0]["cron"]  # YAML 1.1 reads the key "on" as True
    script = wf["jobs"]["push-teacher"]["steps"][-1]["run"]
    assert "python kaggle/push.py 02_teacher_inference" in script and "02_teacher_inference" in KERNELS
