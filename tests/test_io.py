"""Atomic writes survive a writer killed at any instant."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import textwrap
import time

from tinytribe._io import atomic_write_json, sha256_file
from tinytribe.formats import Manifest
from tinytribe.manifest import build_manifest

WRITER = textwrap.dedent("""
    import sys
    from tinytribe.formats import Manifest
    path = sys.argv[1]
    m = Manifest.load(path)
    while True:                                  # mark items done one by one, forever
        for it in m.items:
            if it.status != "done":
                it.status = "done"
                it.output = "x" * 50_000          # large enough that a write takes a while
                break
        else:
            for it in m.items:
                it.status, it.output = "pending", None
            m.items[0].status = "done"            # item 0 stays done in every version written
        m.save(path)
""")


def test_killed_writer_never_leaves_a_torn_manifest(tmp_path, subprocess_env, python):
    """Kill a process that rewrites a manifest in a loop, 25 times at random instants: the file always
    loads, and the item that was done before the writer started is still done."""
    path = tmp_path / "m.json"
    m = build_manifest(["a.mp4", "b.mp4"], job="probe", chunk_s=10, durations={"a.mp4": 200.0, "b.mp4": 95.0})
    m.items[0].status = "done"
    m.save(path)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = random.Random(0)
    saw_change = 0
    for _ in range(25):
        before = path.read_bytes()
        proc = subprocess.Popen([python, str(script), str(path)], env=subprocess_env)
        time.sleep(0.25 + rng.random() * 0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded = Manifest.load(path)  # raises on a torn or half-written file
        assert loaded.items[0].status == "done"
        saw_change += path.read_bytes() != before
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert saw_change > 10, "the writer should have written between kills"
    # a kill between mkstemp and rename may leave a temp file; it is never the manifest itself
    assert all(name.startswith(".m.json.") for name in leftovers)


def test_atomic_write_keeps_backup_and_hash(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"v": 1}, backup=True)
    atomic_write_json(p, {"v": 2}, backup=True)
    assert json.loads(p.read_text()) == {"v": 2}
    assert json.loads((tmp_path / "a.json.bak").read_text()) == {"v": 1}
    import hashlib
    assert sha256_file(p) == hashlib.sha256(p.read_bytes()).hexdigest()
