"""The CLI is a thin shell: main(argv) calls library functions; errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tinytribe.cli import main
from tinytribe.formats import Manifest


def test_build_summary_shard_merge(tmp_path, media_dir, capsys):
    out = tmp_path / "m.json"
    assert main(["manifest", "build", "--job", "probe", "--chunk-s", "5", "--out", str(out),
                 "--relative-to", str(media_dir), *map(str, sorted(media_dir.iterdir()))]) == 0
    m = Manifest.load(out)
    assert len(m.items) == 5 + 3 + 4 and m.items[0].source == "astronaut_tour.mp4"
    assert main(["manifest", "build", "--job", "probe", "--out", str(out), str(media_dir / "coffee_still.mp4")]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["manifest", "shard", str(out), "--shards", "2", "--out-dir", str(tmp_path / "sh")]) == 0
    shards = sorted((tmp_path / "sh").glob("*.json"))
    assert [p.name for p in shards] == ["m.shard0of2.json", "m.shard1of2.json"]
    assert main(["manifest", "merge", str(tmp_path / "merged.json"), *map(str, shards)]) == 0
    assert len(Manifest.load(tmp_path / "merged.json").items) == 12
    capsys.readouterr()
    assert main(["manifest", "summary", str(out)]) == 0
    assert "0/12 done, 12 pending" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert main(["manifest", "summary", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json: not valid JSON" in err
    assert main(["manifest", "build", "--job", "x", "--out", str(tmp_path / "o.json"), str(tmp_path / "nope.mp4")]) == 2
    assert "nope.mp4: no such file" in capsys.readouterr().err


def test_plan_and_module_entry_point(capsys):
    assert main(["plan", "--hours", "15"]) == 0
    out = capsys.readouterr().out
    assert "kaggle (1 account)" in out and "storage (fp16)" in out
    r = subprocess.run([sys.executable, "-m", "tinytribe", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "manifest" in r.stdout


def test_sync_and_doctor_commands(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    remote = f"folder:{tmp_path / 'drive'}"
    assert main(["sync", "push", "--remote", remote, "--run-dir", str(run)]) == 0
    assert "pushed 1 files" in capsys.readouterr().out
    assert main(["sync", "restore", "--remote", remote, "--run-dir", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "manifest.json").read_text() == "{}"
    assert main(["doctor", "--run-dir", str(run), "--remote", remote]) == 0
    assert "1 KB round trip" in capsys.readouterr().out
    assert main(["sync", "push", "--remote", "ftp:x", "--run-dir", str(run)]) == 2
    assert "unknown kind 'ftp'" in capsys.readouterr().err


def test_teacher_commands(tmp_path, capsys):
    import numpy as np

    from tinytribe.formats import FeatureCache

    rng = np.random.default_rng(0)
    feats = tmp_path / "features"
    feats.mkdir()
    for s in range(3):
        x = {m: rng.standard_normal((120, 8)).astype(np.float32) for m in ("text", "audio", "video")}
        FeatureCache(stimulus_id=f"ep{s}", rate_hz=2.0, t0_s=0.0, features=x, masks={m: np.ones(120, bool) for m in x},
                     backbones={m: {"name": m} for m in x}, extraction={}, source=str(tmp_path / f"ep{s}.mp4"),
                     source_sha256="0" * 64, timing={"word_onsets": np.zeros(120), "speech": np.zeros(120)}
                     ).save(feats / f"ep{s}.npz")
    out = tmp_path / "teacher" / "manifest.json"
    assert main(["teacher", "select", str(feats), "--k", "2", "--per-cluster", "1", "--media", str(tmp_path),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 segments" in text and "chose 2" in text and "2 pending" in text
    assert main(["teacher", "select", str(feats), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err

    np.save(tmp_path / "ep0_preds.npy", rng.standard_normal((10, 400)).astype(np.float32))
    assert main(["teacher", "import", str(tmp_path / "ep0_preds.npy"), "--out", str(tmp_path / "imp"),
                 "--tr-s", "1.49", "--teacher-id", "lab"]) == 0
    assert "imported 1 episodes" in capsys.readouterr().out
    assert main(["teacher", "storage", str(tmp_path / "imp" / "manifest.json")]) == 0
    assert "measured:" in capsys.readouterr().out


@pytest.mark.notebook
def test_a_failing_notebook_is_one_line_and_exit_2(tmp_path, capsys):
    from tinytribe.cli import main

    rc = main(["notebooks", "04_phase2_kd", "--out", str(tmp_path / "nb"), "-p", f"run_dir={tmp_path / 'run'}",
               "-p", f'study_dirs=["{tmp_path / "no_such_study"}"]'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "notebook 04_phase2_kd failed in cell" in err and "no_such_study" in err
    assert f"traceback in {tmp_path / 'nb' / '04_phase2_kd.ipynb'}" in err
