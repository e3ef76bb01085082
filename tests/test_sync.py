"""Sync of a run folder: a mounted folder for real, a real rclone WebDAV server on loopback (killed
mid-upload), and pydrive2 against a local stand-in of the Drive API."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import sys

from tinytribe._io import sha256_file
from tinytribe.sync import FolderRemote, RcloneRemote, RemoteError, RunSync, SyncLockedError, open_remote


def make_run(root: Path, big_mb: int = 0) -> dict[str, str]:
    (root / "teacher").mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text('{"x": 1}\n')
    (root / "teacher" / "a_000000.npz").write_bytes(os.urandom(3000))
    (root / "manifest.json.lock").write_text("")  # never synced
    if big_mb:
        (root / "checkpoint.pt").write_bytes(os.urandom(big_mb << 20))
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".lock")}


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".lock")}


def check_push_restore(remote, tmp_path):
    src = tmp_path / "session1"
    want = make_run(src)
    s1 = RunSync(remote, src, owner="session-1")
    s1.acquire()
    st = s1.push()
    assert sorted(st.transferred) == sorted(want) and "manifest.json.lock" not in remote.list()
    assert s1.push().transferred == []  # incremental: nothing changed, nothing sent
    (src / "manifest.json").write_text('{"x": 2}\n')
    assert s1.push().transferred == ["manifest.json"]
    s1.release()
    dst = tmp_path / "session2"
    s2 = RunSync(remote, dst, owner="session-2")
    s2.acquire()
    assert sorted(s2.restore().transferred) == sorted(want)
    assert hashes(dst) == hashes(src)
    assert s2.restore().transferred == []
    assert s2.round_trip() < 30
    s2.release()


def test_folder_remote(tmp_path):
    check_push_restore(FolderRemote(tmp_path / "drive" / "run"), tmp_path)
    assert isinstance(open_remote(f"folder:{tmp_path}"), FolderRemote)
    with pytest.raises(ValueError, match="unknown kind 'ftp'"):
        open_remote("ftp:host/x")


def test_lock_keeps_a_second_session_out(tmp_path):
    remote = FolderRemote(tmp_path / "r")
    clock = [1000.0]
    a = RunSync(remote, tmp_path / "a", owner="kaggle-ana", lease_s=60, clock=lambda: clock[0])
    b = RunSync(remote, tmp_path / "b", owner="colab-ben", lease_s=60, clock=lambda: clock[0])
    a.acquire()
    with pytest.raises(SyncLockedError, match="held by kaggle-ana"):
        b.acquire()
    (tmp_path / "b").mkdir()
    with pytest.raises(SyncLockedError, match="no longer holds the lock"):
        b.push()
    clock[0] += 61  # a died without releasing: its lease runs out
    b.acquire()
    with pytest.raises(SyncLockedError, match="no longer holds"):
        a.push()


def test_retries_with_backoff_then_gives_up(tmp_path):
    class Flaky(FolderRemote):
        fails = 2

        def upload(self, local, key):
            if Flaky.fails and not key.startswith(".tinytribe-sync"):
                Flaky.fails -= 1
                raise RemoteError("503 backend error")
            super().upload(local, key)

    waits = []
    remote = Flaky(tmp_path / "r")
    s = RunSync(remote, tmp_path / "run", owner="me", sleep=waits.append, backoff_s=0.5)
    make_run(tmp_path / "run")
    s.acquire()
    s.push()
    assert waits == [0.5, 1.0]
    Flaky.fails = 99  # a backend that stays down
    (tmp_path / "run" / "manifest.json").write_text("changed")
    with pytest.raises(RemoteError, match="upload manifest.json: gave up after 6 attempts: 503"):
        s.push()
    assert waits[2:] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_restore_refuses_corrupted_remote_files(tmp_path):
    remote = FolderRemote(tmp_path / "r")
    s = RunSync(remote, tmp_path / "run", owner="me", sleep=lambda s: None)
    make_run(tmp_path / "run")
    s.acquire()
    s.push()
    (tmp_path / "r" / "teacher" / "a_000000.npz").write_bytes(b"bit rot")
    with pytest.raises(RemoteError, match="a_000000.npz arrived with the wrong SHA-256"):
        RunSync(remote, tmp_path / "fresh", owner="x", sleep=lambda s: None).restore()
    assert not (tmp_path / "fresh" / "teacher" / "a_000000.npz").exists()


# -- rclone against a real WebDAV server on loopback (tests/conftest.py serves it) -------------------

def test_rclone_webdav_push_restore(webdav, tmp_path):
    check_push_restore(RcloneRemote("dav:runs/r1", config_path=webdav.conf, timeout_s=5), tmp_path)
    assert (webdav.root / "runs" / "r1" / "manifest.json").read_text() == '{"x": 2}\n'


def test_rclone_server_killed_mid_upload_then_retry_completes(webdav, tmp_path):
    remote = RcloneRemote("dav:runs/r2", config_path=webdav.conf, timeout_s=3)
    src = tmp_path / "run"
    want = make_run(src, big_mb=64)
    s = RunSync(remote, src, owner="kaggle", backoff_s=1.0, max_backoff_s=2.0, attempts=8)
    s.acquire()

    events = []

    def kill_and_restart() -> None:
        deadline = time.time() + 30
        while time.time() < deadline:  # wait until the big upload is under way, then pull the plug
            partial = [p for p in webdav.root.rglob(".tt-partial-*-checkpoint.pt") if p.stat().st_size > 0]
            if partial:
                events.append(f"killed with {partial[0].stat().st_size} bytes uploaded")
                break
            time.sleep(0.005)
        webdav.kill()
        time.sleep(2.0)
        webdav.start()
        events.append("restarted")

    t = threading.Thread(target=kill_and_restart)
    t.start()
    stats = s.push()
    t.join()
    assert events[0].startswith("killed with") and events[-1] == "restarted", events
    assert "checkpoint.pt" in stats.transferred
    on_server = webdav.root / "runs" / "r2"
    assert sha256_file(on_server / "checkpoint.pt") == want["checkpoint.pt"]  # nothing lost or corrupted
    assert not [p for p in on_server.rglob(".tt-partial-*") if p.stat().st_size == 64 << 20]
    fresh = tmp_path / "restored"
    RunSync(remote, fresh, owner="next").restore()
    assert hashes(fresh) == hashes(src)


# -- pydrive2 against a local stand-in of the Drive API --------------------------------------------

def test_pydrive2_drive_remote_against_a_local_drive_api(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fake_drive import FakeDrive

    from tinytribe.sync.gdrive import DriveRemote, drive_from_refresh_token

    fake = FakeDrive("cid.apps.example", "client-secret-value", "refresh-token-value-123")
    try:
        drive = drive_from_refresh_token("cid.apps.example", "client-secret-value", "refresh-token-value-123",
                                         token_uri=f"{fake.url}/token", api_root=fake.url)
        remote = DriveRemote(drive, "root-folder")
        check_push_restore(remote, tmp_path)
        # the run folder's layout on "Drive": sub-folders, one file per name
        titles = sorted(f["title"] for f in fake.files.values())
        assert titles.count("manifest.json") == 1 and "teacher" in titles and ".tinytribe-sync" in titles
        assert any(r.startswith("PUT /upload/drive/v2/files/") for r in fake.requests)  # replaced as a new revision
        with pytest.raises(RemoteError, match="authorisation failed"):
            drive_from_refresh_token("cid.apps.example", "client-secret-value", "revoked-token",
                                     token_uri=f"{fake.url}/token", api_root=fake.url)
    finally:
        fake.close()


def test_two_rclone_remotes_in_one_process_reach_their_own_servers(tmp_path):
    """rclone_python keeps its first config path process-wide; each remote must pass its own."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from conftest import WebDav

    a, b = WebDav(tmp_path / "root-a", tmp_path / "a"), WebDav(tmp_path / "root-b", tmp_path / "b")
    try:
        RcloneRemote("dav:x", config_path=a.conf, timeout_s=5).write_bytes("f.txt", b"for a")
        RcloneRemote("dav:x", config_path=b.conf, timeout_s=5).write_bytes("f.txt", b"for b")
        assert (a.root / "x" / "f.txt").read_bytes() == b"for a" and (b.root / "x" / "f.txt").read_bytes() == b"for b"
    finally:
        a.kill()
        b.kill()


HOLDER = """
import sys, time
from tinytribe.sync import FolderRemote, RunSync
s = RunSync(FolderRemote(sys.argv[1]), sys.argv[2], owner="crashing-session", lease_s=1.0, heartbeat_s=0.1)
s.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_heartbeat_holds_the_lock_and_a_crashed_session_frees_it_within_one_lease(tmp_path, subprocess_env):
    import subprocess

    remote = FolderRemote(tmp_path / "r")
    a = RunSync(remote, tmp_path / "a", owner="live", lease_s=1.0, heartbeat_s=0.1)
    b = RunSync(remote, tmp_path / "b", owner="next", lease_s=1.0)
    a.acquire()
    time.sleep(2.0)   # twice the lease, without a push: the heartbeat renewed it
    with pytest.raises(SyncLockedError, match="held by live"):
        b.acquire()
    a.release()
    assert a.heartbeat_error is None
    b.acquire()
    b.release()

    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "r"), str(tmp_path / "c")],
                            env=subprocess_env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()   # the session dies without releasing
    proc.wait()
    with pytest.raises(SyncLockedError, match="held by crashing-session"):
        b.acquire()
    time.sleep(1.2)   # one lease later the lock is free: not an hour
    b.acquire()
    with pytest.raises(ValueError, match="more often than the lease"):
        RunSync(remote, tmp_path / "d", lease_s=1.0, heartbeat_s=2.0)


def test_a_second_session_in_the_same_kernel_takes_over_its_own_lock(tmp_path):
    remote = FolderRemote(tmp_path / "r")
    first = RunSync(remote, tmp_path / "a", lease_s=5.0, heartbeat_s=0.1)   # a cell failed before finish()
    first.acquire()
    again = RunSync(remote, tmp_path / "a", lease_s=5.0, heartbeat_s=0.1)   # "Run all" again in that kernel
    again.acquire()
    time.sleep(0.3)
    assert first.heartbeat_error and "no longer holds" in first.heartbeat_error, "the old beat stops"
    other = RunSync(remote, tmp_path / "b", owner="colab-ben", lease_s=5.0)
    with pytest.raises(SyncLockedError, match="held by"):
        other.acquire()
    again.release()
    first.release()
