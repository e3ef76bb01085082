"""The teacher job on real media with the stand-in teacher, diversity sampling and imports."""

from __future__ import annotations

import numpy as np
import pytest

from tinytribe.formats import FeatureCache, ManifestItem, TeacherChunk
from tinytribe.teacher.cache import expected_storage, stitch_chunks, teacher_job_work
from tinytribe.teacher.diversity import diversity_manifest
from tinytribe.teacher.importing import import_predictions
from tinytribe.teacher.protocol import grid_times, load_teacher
from tinytribe.teacher.standin import StandInTeacher


def _item(source, a, b):
    return ManifestItem(id=f"{source.split('.')[0]}_{int(a):06d}", source=source, start_s=a, end_s=b)


def test_grid_times_are_stimulus_wide():
    np.testing.assert_array_equal(grid_times(12.5, 16.0, 1.0), [13.0, 14.0, 15.0])
    np.testing.assert_array_equal(grid_times(0.0, 2.0, 2.0), [0.0, 0.5, 1.0, 1.5])


def test_standin_windows_equal_the_whole_file(media_dir):
    t = load_teacher("standin", seed=3)
    clip = media_dir / "astronaut_tour.mp4"
    whole = t.predict(clip, 0.0, 24.0)
    parts = [t.predict(clip, a, b) for a, b in ((0.0, 9.5), (9.5, 24.0))]
    np.testing.assert_array_equal(np.concatenate([p.predictions for p in parts]), whole.predictions)
    np.testing.assert_array_equal(np.concatenate([p.activations["fusion_l6"] for p in parts]),
                                  whole.activations["fusion_l6"])
    assert whole.predictions.shape == (24, 20484) and whole.activations["fusion_l4"].shape == (48, 1152)
    # it responds to the media: a still, silent clip gives a flat prediction after the first seconds
    still = t.predict(media_dir / "coffee_still.mp4", 0.0, 12.0).predictions
    assert whole.predictions.std(axis=0).mean() > 10 * still[9:].std(axis=0).mean()
    with pytest.raises(ValueError, match="unknown teacher 'tribe'; choose from tribev2, standin, demo"):
        load_teacher("tribe")


def test_job_writes_reduced_chunks_with_bold_times(media_dir, tmp_path):
    teacher = StandInTeacher()
    work = teacher_job_work(media_dir, tmp_path, teacher, space="fsaverage4")
    items = [_item("astronaut_tour.mp4", 0.0, 12.0), _item("astronaut_tour.mp4", 12.0, 24.0)]
    paths = [work(it) for it in items]
    chunks = [TeacherChunk.load(p) for p in paths]
    c = chunks[1]
    assert c.space == "fsaverage4" and c.predictions.shape == (12, 5124) and c.predictions.dtype == np.float16
    np.testing.assert_array_equal(c.bold_times_s, np.arange(12.0, 24.0) + 5.0)
    np.testing.assert_array_equal(c.activation_times_s["fusion_l4"], np.arange(24.0, 48.0) / 2)
    assert c.teacher["id"] == "tinytribe/standin" and c.events[0]["type"] == "Video" and len(c.source_sha256) == 64
    whole = teacher.predict(media_dir / "astronaut_tour.mp4", 0.0, 24.0)
    stitched = stitch_chunks(chunks)
    ref = whole.predictions[:, np.r_[0:2562, 10242:12804]].astype(np.float16)
    np.testing.assert_array_equal(stitched.predictions, ref)
    # a second pass reuses the files; another teacher revision or space does not
    mtime = paths[0].stat().st_mtime_ns
    assert work(items[0]) == paths[0] and paths[0].stat().st_mtime_ns == mtime
    teacher_job_work(media_dir, tmp_path, StandInTeacher(seed=1), space="fsaverage4")(items[0])
    assert paths[0].stat().st_mtime_ns != mtime
    parcels = TeacherChunk.load(teacher_job_work(media_dir, tmp_path / "p", teacher, space="schaefer-400")(items[0]))
    assert parcels.predictions.shape == (12, 400)
    with pytest.raises(ValueError, match="overlap"):
        stitch_chunks([chunks[0], chunks[0]])


def test_job_errors_name_the_file(media_dir, tmp_path):
    work = teacher_job_work(media_dir, tmp_path, StandInTeacher())
    with pytest.raises(FileNotFoundError, match="nope.mp4: media file not found"):
        work(_item("nope.mp4", 0.0, 10.0))
    bad = tmp_path / "media"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(Exception, match="broken.mp4"):
        teacher_job_work(bad, tmp_path, StandInTeacher())(_item("broken.mp4", 0.0, 10.0))
    with pytest.raises(ValueError, match="unknown output space 'fsaverage6'"):
        teacher_job_work(media_dir, tmp_path, StandInTeacher(), space="fsaverage6")


def test_storage_report_counts_real_bytes(tmp_path):
    e5 = expected_storage("fsaverage5")
    assert e5.bytes == 3600 * (20484 * 2 + 2 * 2 * 1152 * 2)  # 1 Hz predictions + two 2 Hz activations, fp16
    assert round(e5.mb_per_hour) == 181 and round(expected_storage("fsaverage4").mb_per_hour) == 70
    assert "MB per hour" in e5.line()


def _cache(stim, content, n_steps, rng):
    """Synthetic feature file: content k = a distinct direction per modality, plus noise."""
    feats, masks = {}, {}
    for m, d in (("text", 8), ("audio", 8), ("video", 16)):
        base = np.zeros((n_steps, d), np.float32)
        for i0 in range(0, n_steps, 60):
            k = content[(i0 // 60) % len(content)]
            base[i0:i0 + 60, k % d] = 3.0
        feats[m] = base + 0.3 * rng.standard_normal((n_steps, d)).astype(np.float32)
        masks[m] = np.ones(n_steps, bool)
    return FeatureCache(stimulus_id=stim, rate_hz=2.0, t0_s=0.0, features=feats, masks=masks,
                        backbones={m: {"name": m} for m in feats}, extraction={}, source=f"/media/{stim}.mp4",
                        source_sha256="0" * 64, timing={"word_onsets": np.zeros(n_steps), "speech": np.zeros(n_steps)})


def test_diversity_picks_every_kind_of_content(tmp_path):
    rng = np.random.default_rng(0)
    # 6 kinds of content; kinds 0-3 common, 4 and 5 rare (one 30 s segment each)
    files = []
    for s in range(6):
        fc = _cache(f"ep{s}", [s % 4, (s + 1) % 4], 60 * 10, rng)
        files.append(fc.save(tmp_path / f"ep{s}.npz"))
    files.append(_cache("rare4", [4], 60, rng).save(tmp_path / "rare4.npz"))
    files.append(_cache("rare5", [5], 60, rng).save(tmp_path / "rare5.npz"))
    m, sel = diversity_manifest(files, k=6, per_cluster=1, segment_s=30.0, media_root="/media")
    assert len(m.items) == 6 and m.job == "teacher"
    sources = {it.source for it in m.items}
    assert {"rare4.mp4", "rare5.mp4"} <= sources, "rare content must be chosen"
    assert all(it.end_s - it.start_s == 30.0 and it.id == f"{it.source[:-4]}_{int(it.start_s):06d}" for it in m.items)
    s = sel.stats
    # the rare content is what random choices miss: their worst-covered segment is far from any chosen one
    assert s["segments"] == 62 and s["max_distance"] < 0.5 * s["random_max_distance"]
    assert "coverage" in sel.report() and "teacher compute" in sel.report()


def test_import_npy_h5_and_algonauts_dicts(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    ep = rng.standard_normal((30, 1000)).astype(np.float32)
    np.save(tmp_path / "s01e01a.npy", ep)
    m = import_predictions(tmp_path / "s01e01a.npy", tmp_path / "out", tr_s=1.49, teacher_id="my-tribe-run")
    c = TeacherChunk.load(tmp_path / "out" / "s01e01a.npz")
    assert c.space == "schaefer-1000" and c.sample_width_s == 1.49 and c.hrf_offset_s == 0.0
    np.testing.assert_allclose(c.bold_times_s, np.arange(30) * 1.49)
    np.testing.assert_allclose(c.predictions, ep.astype(np.float16))
    assert m.items[0].status == "done"

    with h5py.File(tmp_path / "preds.h5", "w") as f:
        f["s01e02a"] = rng.standard_normal((5, 20484))
        f["s01e02b"] = rng.standard_normal((6, 20484))
    m = import_predictions(tmp_path / "preds.h5", tmp_path / "h5out", tr_s=1.0, first_bold_s=5.0, teacher_id="x")
    assert [it.id for it in m.items] == ["s01e02a", "s01e02b"]
    assert TeacherChunk.load(tmp_path / "h5out" / "s01e02b.npz").bold_times_s[0] == 5.0

    sub = {"sub-01": {"s07e01a": ep[:10]}, "sub-03": {"s07e01a": ep[:10] * 2}}
    np.save(tmp_path / "submission.npy", sub, allow_pickle=True)
    with pytest.raises(ValueError, match="submission.npy: holds pickled objects"):
        import_predictions(tmp_path / "submission.npy", tmp_path / "alg", tr_s=1.49, teacher_id="algonauts")
    m = import_predictions(tmp_path / "submission.npy", tmp_path / "alg", tr_s=1.49, teacher_id="algonauts",
                           allow_pickle=True)
    assert [it.output for it in m.items] == ["sub-01/s07e01a.npz", "sub-03/s07e01a.npz"]
    assert TeacherChunk.load(tmp_path / "alg" / "sub-03" / "s07e01a.npz").teacher["id"] == "algonauts:sub-03"


def test_import_refuses_bad_arrays(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((4, 400), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"nan.npy \[nan\]: 1600 NaN/Inf values"):
        import_predictions(tmp_path / "nan.npy", tmp_path / "o", tr_s=1.0, teacher_id="x")
    np.save(tmp_path / "odd.npy", np.zeros((4, 123), np.float32))
    with pytest.raises(ValueError, match="odd.npy \\[odd\\]: 123 columns match no known space"):
        import_predictions(tmp_path / "odd.npy", tmp_path / "o", tr_s=1.0, teacher_id="x")
    assert not (tmp_path / "o").exists(), "nothing is written when an episode fails"
    with pytest.raises(FileNotFoundError, match="missing.npy: not found"):
        import_predictions(tmp_path / "missing.npy", tmp_path / "o", tr_s=1.0, teacher_id="x")
