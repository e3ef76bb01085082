"""A scripted Kaggle-like rehearsal: Kaggle's environment variables and paths, a tiny budget, a real
rclone remote on loopback. Session 1 stops on budget; its disk is wiped, as Kaggle's is; session 2
restores, resumes and finishes -- with the same outputs as an uninterrupted run, and no secret in any
output."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tinytribe import manifest as mf
from tinytribe.pipeline import run_notebook
from tinytribe.formats import Manifest

MARKER = "ya29.SECRET-MARKER-a1b2c3d4e5"


def probe_arrays(run: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted((run / "probe").glob("*.npz")):
        with np.load(p) as z:
            out[p.name] = {k: z[k] for k in z.files if k != "meta"}
    return out


def all_text(*roots: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for root in roots for p in root.rglob("*") if p.is_file())


@pytest.mark.notebook
def test_kaggle_like_rehearsal(tmp_path, webdav, media_dir, monkeypatch):
    kaggle = tmp_path / "kaggle"
    media = kaggle / "input" / "tinytribe-media"
    shutil.copytree(media_dir, media)
    (kaggle / "working").mkdir(parents=True)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("KAGGLE_URL_BASE", "https://www.kaggle.com")
    # the Kaggle session is the container, from its first process: here that is the host's, up for hours
    monkeypatch.setenv("TINYTRIBE_SESSION_STARTED_AT", str(time.time()))
    # the rclone config arrives as a secret, with a token the outputs must never show
    monkeypatch.setenv("TINYTRIBE_RCLONE_CONF", webdav.conf_text + f'token = {{"access_token":"{MARKER}"}}\n')
    params = {"media_dir": str(media), "run_dir": str(kaggle / "working" / "run"), "chunk_s": 4.0,
              "sync_remote": "rclone:dav:tinytribe/setup", "sync_every_s": 1.0, "account": "ana"}
    executed = tmp_path / "executed"

    nb1 = run_notebook("00_setup_and_plan", executed / "s1", {**params, "session_limit_s": 0.1}, cwd=kaggle / "working")
    on_remote = Manifest.load(webdav.root / "tinytribe" / "setup" / "manifest.json")
    s1 = mf.summarize(on_remote)
    assert 0 < s1.pending < s1.total and s1.done > 0, s1.line()  # stopped on budget, its work pushed
    assert "stopped on the session budget" in nb1.read_text()
    assert not (webdav.root / "tinytribe" / "setup" / ".tinytribe-sync" / "lock.json").exists()  # released

    shutil.rmtree(kaggle / "working")  # the session ends: Kaggle's disk is gone
    (kaggle / "working").mkdir()
    nb2 = run_notebook("00_setup_and_plan", executed / "s2", params, cwd=kaggle / "working")
    text2 = nb2.read_text()
    assert "restored" in text2 and "nothing left to claim" in text2
    resumed = Manifest.load(kaggle / "working" / "run" / "manifest.json")
    assert mf.summarize(resumed).done == s1.total
    # items finished in session 1 were restored, not redone
    first = {it.id: it.timings["finished_at"] for it in on_remote.items if it.status == "done"}
    assert all(resumed.item(i).timings["finished_at"] == t for i, t in first.items())

    straight = tmp_path / "straight"
    run_notebook("00_setup_and_plan", executed / "straight",
                 {**params, "run_dir": str(straight / "run"), "sync_remote": "rclone:dav:tinytribe/straight"},
                 cwd=straight.parent)
    a, b = probe_arrays(kaggle / "working" / "run"), probe_arrays(straight / "run")
    assert a.keys() == b.keys() and len(a) == s1.total
    for name in a:
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k], err_msg=f"{name}:{k}")
    remote_run = webdav.root / "tinytribe" / "setup"
    assert probe_arrays(remote_run).keys() == a.keys()
    ledger = json.loads((remote_run / "quota_ledger.json").read_text())
    # both runs happened in one "container" (PID 1 started once), which Kaggle counts as one session
    assert [s["account"] for s in ledger["sessions"]] == ["ana"] and ledger["sessions"][0]["platform"] == "kaggle"

    # no secret anywhere: executed notebooks, run folders, the remote
    everything = all_text(executed, kaggle / "working", straight, webdav.root)
    assert MARKER not in everything and webdav.password not in everything
    assert "secrets: RCLONE_CONF yes" in text2  # the doctor names it, nothing more
