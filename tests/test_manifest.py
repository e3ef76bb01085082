"""Manifests: building, leases, concurrent workers, retries, shards and merges."""

from __future__ import annotations

import json
import multiprocessing as mp
import random

import pytest

from tinytribe import manifest as mf
from tinytribe.formats import FormatError, Manifest
from tinytribe.features.decode import MediaError


class FakeClock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def small_manifest(tmp_path, max_attempts=3):
    m = mf.build_manifest(["vids/a.mp4", "vids/b.mkv"], job="teacher", chunk_s=150, max_attempts=max_attempts,
                          durations={"vids/a.mp4": 400.0, "vids/b.mkv": 150.5})
    path = tmp_path / "job.json"
    m.save(path)
    return path


def test_chunk_windows_cover_the_stimulus():
    assert mf.chunk_windows(400, 150) == [(0, 150), (150, 300), (300, 400)]
    assert mf.chunk_windows(150.5, 150) == [(0, 150.5)]  # a 0.5 s tail joins the last window
    assert mf.chunk_windows(10, 150) == [(0, 10)]
    with pytest.raises(ValueError):
        mf.chunk_windows(10, 0)


def test_build_ids_carry_start_seconds(tmp_path):
    m = Manifest.load(small_manifest(tmp_path))
    assert [it.id for it in m.items] == ["a_000000", "a_000150", "a_000300", "b_000000"]
    assert m.items[2].end_s == 400.0 and m.items[3].end_s == 150.5
    assert all(it.status == "pending" and it.attempts == 0 for it in m.items)
    assert m.created_by["tinytribe_version"]


def test_build_from_real_media(media_dir):
    m = mf.build_manifest(sorted(media_dir.iterdir()), job="probe", chunk_s=10, relative_to=media_dir)
    by_source = {}
    for it in m.items:
        by_source.setdefault(it.source, []).append(it)
    assert set(by_source) == {"astronaut_tour.mp4", "coffee_still.mp4", "north_wind_story.mp3"}
    assert by_source["astronaut_tour.mp4"][-1].end_s == pytest.approx(24.0, abs=0.1)
    assert by_source["north_wind_story.mp3"][-1].end_s == pytest.approx(16.0, abs=0.2)


def test_build_names_the_unreadable_file(tmp_path, media_dir):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match="broken.mp4"):
        mf.build_manifest([bad], job="probe", chunk_s=10)
    skipped = []
    m = mf.build_manifest([bad, media_dir / "coffee_still.mp4"], job="probe", chunk_s=10,
                          on_error=lambda s, e: skipped.append(str(e)))
    assert len(skipped) == 1 and "broken.mp4" in skipped[0] and len(m.items) == 3
    failed = [it for it in m.items if it.status == "failed"]
    assert len(failed) == 1 and failed[0].source.endswith("broken.mp4") and "broken.mp4" in failed[0].last_error


def test_claim_lease_and_expiry(tmp_path):
    path = small_manifest(tmp_path)
    clock = FakeClock()
    a = mf.claim_next(path, worker="A", lease_s=60, now=clock)
    b = mf.claim_next(path, worker="B", lease_s=60, now=clock)
    assert a.id != b.id  # a live lease is never handed to a second worker
    clock.t += 61  # A and B died: their leases expire
    again = [mf.claim_next(path, worker="C", lease_s=60, now=clock).id for _ in range(4)]
    assert sorted(again) == sorted(it.id for it in Manifest.load(path).items)
    assert mf.claim_next(path, worker="C", now=clock) is None
    with pytest.raises(RuntimeError, match="not held by"):
        mf.complete(path, a.id, worker="A")  # A's lease was taken over


def test_retries_then_failed(tmp_path):
    path = small_manifest(tmp_path, max_attempts=2)
    it = mf.claim_next(path, worker="W")
    assert mf.fail(path, it.id, worker="W", error="RuntimeError: boom\nstack...").status == "pending"
    again = mf.claim_next(path, worker="W")
    assert again.id == it.id
    final = mf.fail(path, it.id, worker="W", error="RuntimeError: boom again")
    assert final.status == "failed" and final.attempts == 2 and final.last_error == "RuntimeError: boom again"
    s = mf.summarize(Manifest.load(path))
    assert (s.failed, s.pending) == (1, 3)
    assert mf.retry_failed(path) == 1
    assert Manifest.load(path).item(it.id).status == "pending"


def _worker(path: str, name: str, out: "mp.Queue") -> None:
    done = []
    while (it := mf.claim_next(path, worker=name, lease_s=30)) is not None:
        done.append(it.id)
        mf.complete(path, it.id, worker=name, output=f"{it.id}.npz", seconds=0.0)
    out.put((name, done))


def test_two_concurrent_workers_process_each_item_once(tmp_path):
    m = mf.build_manifest([f"v{i}.mp4" for i in range(6)], job="features", chunk_s=10,
                          durations={f"v{i}.mp4": 95.0 for i in range(6)})
    path = tmp_path / "m.json"
    m.save(path)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(path), n, q)) for n in ("w1", "w2")]
    for p in procs:
        p.start()
    results = dict(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    claimed = results["w1"] + results["w2"]
    assert sorted(claimed) == sorted(it.id for it in m.items)  # every item once, none twice
    assert results["w1"] and results["w2"], "both workers should have had work"
    final = Manifest.load(path)
    assert all(it.status == "done" and it.attempts == 1 for it in final.items)


def test_shard_is_a_partition_and_stable(tmp_path):
    m = Manifest.load(small_manifest(tmp_path))
    shards = mf.shard(m, 3)
    ids = [it.id for s in shards for it in s.items]
    assert sorted(ids) == sorted(it.id for it in m.items)
    assert [s.shard_index for s in shards] == [0, 1, 2] and all(s.shard_count == 3 for s in shards)
    assert [[i.id for i in s.items] for s in mf.shard(m, 3)] == [[i.id for i in s.items] for s in shards]
    bigger = mf.build_manifest(["vids/a.mp4", "vids/b.mkv", "vids/c.mp4"], job="teacher", chunk_s=150,
                               durations={"vids/a.mp4": 400.0, "vids/b.mkv": 150.5, "vids/c.mp4": 900})
    for s_old, s_new in zip(shards, mf.shard(bigger, 3)):  # adding media never moves old items
        assert {i.id for i in s_old.items} <= {i.id for i in s_new.items}


def test_merge_never_undoes_done(tmp_path):
    m = Manifest.load(small_manifest(tmp_path))
    rng = random.Random(1)
    for trial in range(20):
        copies = [Manifest.from_json(json.loads(json.dumps(m.to_json()))) for _ in range(3)]
        done_somewhere = set()
        for c in copies:
            for it in c.items:
                it.status = rng.choice(["pending", "running", "done", "failed"])
                it.attempts = rng.randint(0, 3)
                if it.status == "done":
                    done_somewhere.add(it.id)
        merged = mf.merge(*copies)
        assert {it.id for it in merged.items if it.status == "done"} == done_somewhere
        assert [it.id for it in merged.items] == sorted(it.id for it in m.items)


def test_merge_files_of_shards(tmp_path):
    path = small_manifest(tmp_path)
    shards = mf.shard(Manifest.load(path), 2)
    paths = []
    for s in shards:
        p = tmp_path / f"s{s.shard_index}.json"
        s.save(p)
        while (it := mf.claim_next(p, worker="k")) is not None:
            mf.complete(p, it.id, worker="k")
        paths.append(p)
    merged = mf.merge_files(path, paths)
    assert mf.summarize(merged).done == 4 and Manifest.load(path).shard_count == 1
    other = mf.build_manifest(["x.mp4"], job="features", chunk_s=150, durations={"x.mp4": 10})
    with pytest.raises(ValueError, match="cannot merge"):
        mf.merge(merged, other)


def test_summary_hours(tmp_path):
    path = small_manifest(tmp_path)
    it = mf.claim_next(path, worker="W")
    mf.complete(path, it.id, worker="W", seconds=12.0)
    s = mf.summarize(Manifest.load(path))
    assert (s.total, s.done, s.pending) == (4, 1, 3)
    assert s.hours_done == pytest.approx(150 / 3600)
    assert s.hours_left == pytest.approx((400 - 150 + 150.5) / 3600)
    assert s.mean_item_s == 12.0
    assert "1/4 done" in s.line()


def test_corrupt_manifest_is_named_and_backup_kept(tmp_path):
    path = small_manifest(tmp_path)
    it = mf.claim_next(path, worker="W")  # second save: the first version is now the .bak
    mf.complete(path, it.id, worker="W")
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # torn by something outside tinytribe
    with pytest.raises(FormatError, match=r"job\.json: not valid JSON .*job\.json\.bak"):
        Manifest.load(path)
    with pytest.raises(FormatError):
        mf.load_or_build(path, lambda: pytest.fail("must not rebuild over an unreadable manifest"))
    assert Manifest.load(tmp_path / "job.json.bak").items  # the backup is a valid manifest


def test_unknown_version_and_keys_refused(tmp_path):
    path = small_manifest(tmp_path)
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="format_version 99 is not supported"):
        Manifest.load(path)
    data["format_version"] = 1
    data["items"][0]["colour"] = "red"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="unknown key 'colour'"):
        Manifest.load(path)
    data["items"][0].pop("colour")
    data["items"][0]["status"] = "finished"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="'finished' is not one of"):
        Manifest.load(path)


def test_build_from_definition(tmp_path, media_dir, repo):
    import shutil

    from tinytribe.formats import JobDefinition, JobGroup, JobStimulus

    media = tmp_path / "media"
    (media / "lecture").mkdir(parents=True)
    (media / "sports").mkdir()
    shutil.copy(media_dir / "north_wind_story.mp3", media / "lecture")
    shutil.copy(media_dir / "astronaut_tour.mp4", media / "sports")
    shutil.copy(media_dir / "coffee_still.mp4", media)
    defn = JobDefinition(name="t", description="", job="teacher", chunk_s=10.0, groups=[
        JobGroup(name="sports", priority=2, target_hours=1.0),
        JobGroup(name="lecture", priority=1, target_hours=2.0),
        JobGroup(name="listed", priority=3, stimuli=[JobStimulus("coffee_still", 60.0), JobStimulus("absent", 5.0)])])
    m, cov = mf.build_from_definition(defn, media)
    assert [it.id for it in m.items] == ["north_wind_story_000000", "north_wind_story_000010",  # priority 1 first
                                         "astronaut_tour_000000", "astronaut_tour_000010", "astronaut_tour_000020",
                                         "coffee_still_000000", "coffee_still_000010"]
    assert [c.group for c in cov] == ["lecture", "sports", "listed"]
    assert cov[2].missing == ("absent",) and cov[2].off_duration == ("coffee_still",)  # 12 s, not 60 s
    assert cov[1].hours == pytest.approx(24 / 3600, rel=0.01) and "of 1 h target" in cov[1].line()
    # a week later: the listed 'absent' arrives, a new sports clip too, a stray file outside the definition
    m.save(tmp_path / "m.json")
    shutil.copy(media_dir / "coffee_still.mp4", media / "absent.mp4")
    shutil.copy(media_dir / "coffee_still.mp4", media / "sports" / "match2.mp4")
    shutil.copy(media_dir / "coffee_still.mp4", media / "stray.mp4")
    r = mf.reconcile(tmp_path / "m.json", media, media=mf.definition_media(defn, media))
    assert sorted(r.added) == ["absent.mp4", "sports/match2.mp4"] and not r.gone and not r.changed
    for name in ("diverse_video_15h", "cneuromod_friends_s1_s7"):  # the shipped definitions load
        d = JobDefinition.load(repo / "manifests" / f"{name}.json")
        assert d.job == "teacher" and d.groups
    friends = JobDefinition.load(repo / "manifests" / "cneuromod_friends_s1_s7.json")
    ids = [s.id for g in friends.groups for s in g.stimuli]
    assert len(ids) == len(set(ids)) == 340 and ids[0] == "friends_s01e01a" and ids[-1] == "friends_s07e24b"
    diverse = JobDefinition.load(repo / "manifests" / "diverse_video_15h.json")
    assert len(diverse.groups) == 9 and sum(g.target_hours for g in diverse.groups) == 15.0


def test_a_dead_worker_on_this_host_is_known_at_once(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    me = mf.default_worker()
    assert me.startswith(f"{socket.gethostname()}:{os.getpid()}:") and mf.worker_alive(me) is True
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:0"
    assert mf.worker_alive(dead) is False
    host, pid, start = me.split(":")
    ns, ticks = start.split(".")
    assert mf.worker_alive(f"{host}:{pid}:{ns}.{int(ticks) - 1000}") is False, "the pid now runs another process"
    assert mf.worker_alive(f"other-host:{pid}:{start}") is None and mf.worker_alive("A") is None
    assert mf.worker_alive(f"{host}:{pid}:{int(ns) + 1}.{ticks}") is None, "another container's pid namespace"

    path = small_manifest(tmp_path)
    held = mf.claim_next(path, worker=dead, lease_s=3600)
    taken = mf.claim_next(path, worker=me, lease_s=3600)
    assert taken.id == held.id, "a dead worker's item is handed out again without waiting for its lease"
    other = mf.claim_next(path, worker="B", lease_s=3600)
    assert other.id != taken.id and Manifest.load(path).item(taken.id).worker == me, "a live worker keeps its item"


def test_a_heartbeat_keeps_a_long_item_and_release_frees_stale_ones(tmp_path):
    import time

    path = small_manifest(tmp_path)
    it = mf.claim_next(path, worker="A", lease_s=0.6)
    with mf.Heartbeat(path, it.id, worker="A", lease_s=0.6, every_s=0.1) as beat:
        time.sleep(1.5)   # far past the lease: the heartbeat renews it
        others = [mf.claim_next(path, worker="B", lease_s=0.6) for _ in range(3)]
        assert it.id not in {o.id for o in others if o}
    assert beat.beats >= 5 and beat.error is None
    mf.complete(path, it.id, worker="A")
    with pytest.raises(ValueError, match="the heartbeat .* more often"):
        mf.Heartbeat(path, it.id, worker="A", lease_s=10, every_s=10)
    # B's three items: released by name, or once stale
    assert sorted(mf.release_items(path, worker="B")) == sorted(o.id for o in others)
    again = mf.claim_next(path, worker="C", lease_s=0.2)
    assert mf.release_items(path, stale=True) == []
    time.sleep(0.3)
    assert mf.release_items(path, stale=True) == [again.id]
    with pytest.raises(ValueError, match="exactly one"):
        mf.release_items(path)


def test_a_heartbeat_that_loses_its_item_says_so(tmp_path):
    import time

    path = small_manifest(tmp_path)
    it = mf.claim_next(path, worker="A", lease_s=5)
    with mf.Heartbeat(path, it.id, worker="A", lease_s=5, every_s=0.1) as beat:
        mf.release_items(path, worker="A")
        time.sleep(0.4)
    assert beat.error and "not held by 'A'" in beat.error


def test_release_from_the_command_line(tmp_path, capsys):
    from tinytribe.cli import main

    path = small_manifest(tmp_path)
    held = mf.claim_next(path, worker="kaggle:7:1", lease_s=3600)
    assert main(["manifest", "release", str(path), "--worker", "kaggle:7:1"]) == 0
    assert f"1 running items back to pending: {held.id}" in capsys.readouterr().out
    assert Manifest.load(path).item(held.id).status == "pending" and Manifest.load(path).item(held.id).attempts == 0


def test_reconcile_picks_up_new_changed_fixed_and_vanished_media(tmp_path, media_dir):
    import os
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "coffee_still.mp4", media / "a.mp4")
    (media / "broken.mp4").write_bytes(b"not a video" * 100)
    path = tmp_path / "m.json"
    seen = []
    m = mf.build_manifest(sorted(media.iterdir()), job="probe", chunk_s=10, relative_to=media,
                          on_error=lambda s, e: seen.append(s))
    m.save(path)
    broken = [it for it in m.items if it.source == "broken.mp4"]
    assert seen and len(broken) == 1 and broken[0].status == "failed" and "broken.mp4" in broken[0].last_error
    assert mf.summarize(m).failed == 1, "an unreadable file is counted, not skipped"
    for it in Manifest.load(path).items:   # a's work is done
        if it.source == "a.mp4":
            claimed = mf.claim_next(path, worker="W")
            mf.complete(path, claimed.id, worker="W", output="x.npz")
    untouched = mf.reconcile(path, media)
    assert (untouched.added, untouched.changed, untouched.gone, untouched.hashed) == ([], [], [], 0)

    shutil.copy(media_dir / "astronaut_tour.mp4", media / "new.mp4")            # added
    shutil.copy(media_dir / "coffee_still.mp4", media / "broken.mp4")           # fixed
    st = os.stat(media / "a.mp4")
    os.utime(media / "a.mp4", (st.st_atime, st.st_mtime + 100))                 # touched, same content
    r = mf.reconcile(path, media)
    assert r.added == ["new.mp4"] and r.changed == ["broken.mp4"] and r.hashed == 2
    m = Manifest.load(path)
    assert all(it.status == "done" for it in m.items if it.source == "a.mp4"), "a touched file is not redone"
    assert all(it.status == "pending" for it in m.items if it.source in ("new.mp4", "broken.mp4"))
    assert {it.note for it in m.items if it.source == "broken.mp4"} == {"source changed: redone"}
    assert all(it.source_size == os.path.getsize(media / "broken.mp4") for it in m.items if it.source == "broken.mp4")
    assert m.format_version == 2 and all(it.source_hash for it in m.items if it.source == "a.mp4")

    with open(media / "a.mp4", "ab") as f:                                      # really changed
        f.write(b"\0" * 10)
    (media / "new.mp4").unlink()                                                # vanished
    r = mf.reconcile(path, media)
    m = Manifest.load(path)
    assert r.changed == ["a.mp4"] and r.gone == ["new.mp4"]
    assert all(it.status == "pending" and it.attempts == 0 and it.output is None for it in m.items if it.source == "a.mp4")
    assert all(it.status == "gone" for it in m.items if it.source == "new.mp4"), "marked, not deleted"
    assert mf.summarize(m).gone == len([it for it in m.items if it.source == "new.mp4"]) > 0
    assert "gone (media removed)" in mf.summarize(m).line()
    while (it := mf.claim_next(path, worker="W")) is not None:
        assert it.source != "new.mp4", "a gone item is never handed out"
        mf.complete(path, it.id, worker="W")

    shutil.copy(media_dir / "coffee_still.mp4", media / "later.mp4")
    with open(media / "a.mp4", "ab") as f:
        f.write(b"\0")
    r = mf.reconcile(path, media, budget_s=0.0)                                 # no time to hash: next session
    assert r.added == ["later.mp4"] and r.deferred == ["a.mp4"]


def test_a_version_1_manifest_is_adopted_without_redoing_its_work(tmp_path, media_dir):
    import json
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "coffee_still.mp4", media / "a.mp4")
    m = mf.build_manifest([media / "a.mp4"], job="probe", chunk_s=10, relative_to=media)
    for it in m.items:
        it.status, it.source_size, it.source_mtime = "done", None, None
    data = m.to_json()
    data["format_version"] = 1
    for it in data["items"]:
        for k in ("source_size", "source_mtime", "source_hash", "note"):
            it.pop(k)
    (tmp_path / "m.json").write_text(json.dumps(data))
    r = mf.reconcile(tmp_path / "m.json", media)
    assert r.changed == []
    back = Manifest.load(tmp_path / "m.json")
    assert all(it.status == "done" and it.source_size and it.source_hash for it in back.items)
    import os

    st = os.stat(media / "a.mp4")
    os.utime(media / "a.mp4", (st.st_atime, st.st_mtime + 60))   # Colab copied the folder again
    assert mf.reconcile(tmp_path / "m.json", media).changed == []
    assert all(it.status == "done" for it in Manifest.load(tmp_path / "m.json").items)


def _cut(src, dst, seconds):
    """``src``'s first ``seconds`` as ``dst`` (a shorter version of the same recording)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams if s.type in ("audio", "video")}
        for pkt in i.demux():
            if pkt.dts is not None and pkt.stream.index in streams and pkt.pts is not None \
                    and float(pkt.pts * pkt.time_base) < seconds:
                pkt.stream = streams[pkt.stream.index]
                o.mux(pkt)


def test_reconcile_survives_shorter_renamed_returning_and_sharded_files(tmp_path, media_dir):
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "astronaut_tour.mp4", media / "a.mp4")            # 24 s: windows at 0, 5, ..., 20
    (media / "b.avi").write_bytes(b"not a video" * 100)
    path = tmp_path / "m.json"
    mf.build_manifest(sorted(media.iterdir()), job="probe", chunk_s=5, relative_to=media, on_error=lambda s, e: None).save(path)
    while (it := mf.claim_next(path, worker="W")) is not None:
        mf.complete(path, it.id, worker="W")
    # a shorter a.mp4, and b.avi fixed by converting it to b.mp4
    _cut(media_dir / "astronaut_tour.mp4", media / "a.mp4", 12.0)
    (media / "b.avi").unlink()
    shutil.copy(media_dir / "coffee_still.mp4", media / "b.mp4")
    r = mf.reconcile(path, media)
    m = Manifest.load(path)   # loads: no duplicate ids
    assert r.changed == ["a.mp4"] and r.added == ["b.mp4"] and r.gone == ["b.avi"] and not r.collisions
    a = {it.id: it for it in m.items if it.source == "a.mp4"}
    assert {i for i, it in a.items() if it.status == "pending"} == {"a_000000", "a_000005", "a_000010"}
    assert {i for i, it in a.items() if it.status == "gone"} == {"a_000015", "a_000020"}
    assert all(it.source != "b.avi" or it.id != "b_000000" for it in m.items), "b.mp4 took over b.avi's id"

    # a file that leaves and comes back unchanged keeps its finished work
    while (it := mf.claim_next(path, worker="W")) is not None:
        mf.complete(path, it.id, worker="W")
    shutil.move(media / "b.mp4", tmp_path / "b.mp4")
    assert mf.reconcile(path, media).gone == ["b.mp4"]
    shutil.move(tmp_path / "b.mp4", media / "b.mp4")
    mf.reconcile(path, media)
    assert all(it.status == "done" for it in Manifest.load(path).items if it.source == "b.mp4")

    # a shard adds only its own share of a new file's items
    shards = mf.shard(Manifest.load(path), 2)
    shards[0].save(tmp_path / "s0.json")
    shutil.copy(media_dir / "coffee_still.mp4", media / "c.mp4")
    mf.reconcile(tmp_path / "s0.json", media)
    c = [it for it in Manifest.load(tmp_path / "s0.json").items if it.source == "c.mp4"]
    every = mf.source_items(media / "c.mp4", "c.mp4", 5)
    assert {it.id for it in c} == {it.id for it in every if mf.shard_of(it.id, 2) == 0}


def test_an_unreadable_file_sent_back_by_retry_failed_gets_all_its_windows(tmp_path, media_dir, monkeypatch):
    import shutil

    from tinytribe.features import decode

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "astronaut_tour.mp4", media / "a.mp4")
    real = decode.probe_media

    def flaky(path):   # the mount timed out while the manifest was made
        raise decode.MediaError(f"{path}: read timed out")

    monkeypatch.setattr(decode, "probe_media", flaky)
    path = tmp_path / "m.json"
    mf.build_manifest([media / "a.mp4"], job="probe", chunk_s=5, relative_to=media, on_error=lambda s, e: None).save(path)
    monkeypatch.setattr(decode, "probe_media", real)
    assert [it.status for it in Manifest.load(path).items] == ["failed"]
    assert mf.retry_failed(path) == 1
    mf.reconcile(path, media)
    items = Manifest.load(path).items
    assert [it.id for it in items] == [f"a_{s:06d}" for s in range(0, 24, 5)] and all(it.status == "pending" for it in items)


def test_a_shortened_file_is_redone_once_not_every_session(tmp_path, media_dir):
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "astronaut_tour.mp4", media / "a.mp4")
    shutil.copy(media_dir / "coffee_still.mp4", media / "b.mp4")
    path = tmp_path / "m.json"
    mf.build_manifest(sorted(media.iterdir()), job="probe", chunk_s=5, relative_to=media).save(path)
    _cut(media_dir / "astronaut_tour.mp4", media / "a.mp4", 12.0)
    assert mf.reconcile(path, media).changed == ["a.mp4"]
    order = [it.source for it in Manifest.load(path).items]
    assert order.index("a.mp4") < order.index("b.mp4"), "a redone file keeps its place in the claim order"
    while (it := mf.claim_next(path, worker="W")) is not None:
        mf.complete(path, it.id, worker="W")
    again = mf.reconcile(path, media)   # the next session, nothing changed
    assert again.changed == [] and again.hashed == 0
    assert all(it.status in ("done", "gone") for it in Manifest.load(path).items)
