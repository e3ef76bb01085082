"""The budgeted loop: stops on budget, retries failures, gives back the item on Ctrl-C, resumes."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe import manifest as mf
from tinytribe.budget import SessionBudget
from tinytribe.formats import Manifest
from tinytribe.runner import media_probe_work, run_job


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(tmp_path, n=6, max_attempts=2):
    srcs = [f"v{i}.mp4" for i in range(n)]
    m = mf.build_manifest(srcs, job="probe", chunk_s=10, durations={s: 10.0 for s in srcs}, max_attempts=max_attempts)
    path = tmp_path / "m.json"
    m.save(path)
    return path


def test_stops_on_budget_then_resumes(tmp_path):
    path = make(tmp_path)
    clock = Clock()
    budget = SessionBudget(limit_s=100, started_at=0, reserve_s=20, clock=clock)

    def work(item):
        clock.t += 25  # each item "takes" 25 s of session time
        out = tmp_path / f"{item.id}.txt"
        out.write_text(item.id)
        return out

    r = run_job(path, work, budget=budget, progress=False)
    # t=0: start (no estimate); t=25: 75 >= 45; t=50: 50 >= 45; t=75: 25 < 45 -> stop
    assert len(r.processed) == 3 and r.stopped_on_budget and r.summary.pending == 3
    m = Manifest.load(path)
    done = [it for it in m.items if it.status == "done"]
    assert all(it.output == f"{it.id}.txt" and len(it.output_sha256) == 64 for it in done)
    r2 = run_job(path, work, budget=SessionBudget.starting_now(None), progress=False)  # the next session
    assert len(r2.processed) == 3 and not r2.stopped_on_budget and r2.summary.done == 6
    assert "nothing left to claim" in r2.line()


def test_failures_are_retried_then_recorded(tmp_path):
    path = make(tmp_path, n=3, max_attempts=2)
    calls = []

    def work(item):
        calls.append(item.id)
        if item.id.startswith("v1"):
            raise ValueError(f"{item.source}: corrupt frame")
        return None

    r = run_job(path, work, budget=SessionBudget.starting_now(None), progress=False)
    assert calls.count("v1_000000") == 2 and len(r.failed) == 2
    it = Manifest.load(path).item("v1_000000")
    assert it.status == "failed" and it.last_error == "ValueError: v1.mp4: corrupt frame"
    assert r.summary.done == 2 and r.summary.failed == 1


def test_ctrl_c_gives_the_item_back(tmp_path):
    path = make(tmp_path, n=2)

    def work(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(path, work, budget=SessionBudget.starting_now(None), progress=False)
    m = Manifest.load(path)
    assert all(it.status == "pending" and it.attempts == 0 and it.worker is None for it in m.items)


def test_media_probe_work_on_real_media(tmp_path, media_dir):
    m = mf.build_manifest(sorted(media_dir.iterdir()), job="probe", chunk_s=8, relative_to=media_dir)
    path = tmp_path / "m.json"
    m.save(path)
    r = run_job(path, media_probe_work(media_dir, tmp_path / "probe"), budget=SessionBudget.starting_now(None),
                progress=False)
    assert r.summary.done == r.summary.total == len(m.items) and not r.failed
    with np.load(tmp_path / "probe" / "astronaut_tour_000016.npz") as z:
        lum, rms, t = z["luminance"], z["audio_rms"], z["times_s"]
    assert t[0] == 16.0 and lum.shape == rms.shape == (16,)
    assert np.all((lum > 0.05) & (lum < 0.95))
    # 16-18 s: a 440 Hz tone at amplitude 0.2 (RMS 0.141); 18-20 s: silence
    assert np.allclose(rms[0:4], 0.2 / np.sqrt(2), rtol=0.15) and np.all(rms[5:8] < 0.01)
    with np.load(tmp_path / "probe" / "coffee_still_000000.npz") as z:
        assert np.isnan(z["audio_rms"]).all() and not np.isnan(z["luminance"]).any()
        assert np.ptp(z["luminance"][:11]) < 0.01  # the still stretch does not change


KILLABLE = """
import sys, time
from pathlib import Path
from tinytribe.budget import SessionBudget
from tinytribe.runner import run_job

out = Path(sys.argv[2])
def work(item):
    (out / f"{item.id}.started").write_text("")
    time.sleep(float(sys.argv[3]))
    p = out / f"{item.id}.done"
    p.write_text(item.id)
    return p

run_job(sys.argv[1], work, budget=SessionBudget.starting_now(None), lease_s=3600, heartbeat_s=60, progress=False)
"""


def test_a_worker_killed_mid_item_is_replaced_at_once_and_nothing_is_done_twice(tmp_path, subprocess_env):
    """The next session does not wait out the dead worker's hour-long lease: its process is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tinytribe import manifest as mf
    from tinytribe.formats import Manifest

    m = mf.build_manifest([f"v{i}.mp4" for i in range(3)], job="probe", chunk_s=10,
                          durations={f"v{i}.mp4": 10.0 for i in range(3)})
    path = tmp_path / "m.json"
    m.save(path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(path), str(out), "2.0"], env=subprocess_env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.started"))) < 2:   # the first item done, the second begun
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    running = [it for it in Manifest.load(path).items if it.status == "running"]
    assert len(running) == 1 and running[0].lease_until > time.time() + 3000, "killed mid-item, under a live lease"
    assert running[0].worker.split(":")[1] == str(proc.pid)
    done_before = {it.id for it in Manifest.load(path).items if it.status == "done"}
    assert len(done_before) == 1

    t0 = time.time()
    again = subprocess.run([sys.executable, "-c", KILLABLE, str(path), str(out), "0.0"], env=subprocess_env, timeout=60)
    assert again.returncode == 0 and time.time() - t0 < 30
    final = Manifest.load(path)
    assert mf.summarize(final).done == 3 and not [it for it in final.items if it.status == "running"]
    assert final.item(next(iter(done_before))).attempts == 1, "the item done before the kill was not redone"
    assert sorted(p.stem for p in out.glob("*.done")) == sorted(it.id for it in final.items)


def test_an_unreadable_file_fails_at_once_instead_of_three_times(tmp_path):
    from tinytribe.features.decode import MediaError

    path = make(tmp_path, n=2, max_attempts=3)
    calls = []

    def work(item):
        calls.append(item.id)
        if item.id.startswith("v1"):
            raise MediaError(f"{item.source}: no decodable audio or video stream")
        return None

    r = run_job(path, work, budget=SessionBudget.starting_now(None), progress=False)
    assert calls.count("v1_000000") == 1, "the same unreadable file was decoded again"
    it = Manifest.load(path).item("v1_000000")
    assert it.status == "failed" and it.attempts == 1 and "no decodable" in it.last_error
    assert r.summary.failed == 1 and r.summary.done == 1


def test_a_renewal_that_fails_once_loses_nothing_and_a_taken_item_is_not_recorded_twice(tmp_path, monkeypatch):
    import time

    from tinytribe import manifest as mf

    path = make(tmp_path, n=2)
    real = mf.renew_lease
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(mf, "renew_lease", flaky)

    def slow(item):
        time.sleep(0.35)
        return None

    r = run_job(path, slow, budget=SessionBudget.starting_now(None), lease_s=1.0, heartbeat_s=0.1, progress=False)
    assert r.summary.done == 2 and not r.failed, "a passing fault in one renewal threw finished work away"

    path2 = make(tmp_path / "b", n=1)

    def taken(item):   # meanwhile, another worker was handed the item
        mf.release_items(path2, stale=False, worker=mf.default_worker())
        mf.claim_next(path2, worker="other", lease_s=60)
        return None

    r = run_job(path2, taken, budget=SessionBudget.starting_now(None), progress=False)
    assert r.processed == [] and r.failed and "lost its lease" in r.failed[0][1]
    assert Manifest.load(path2).items[0].worker == "other", "the other worker's hold is untouched"
    with pytest.raises(ValueError, match="heartbeat .* more often than the lease"):
        run_job(path2, taken, budget=SessionBudget.starting_now(None), lease_s=30, heartbeat_s=60, progress=False)
