"""Every FORMATS dataclass round-trips through its file, and loaders refuse what they cannot read."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from tinytribe.formats import (Checkpoint, FeatureCache, FormatError, Manifest, ManifestItem, Study, StudyRun,
                               StudyStimulus, TeacherChunk, Word, space_size)
from tinytribe.provenance import provenance


def feature_cache(T=40, rng=np.random.default_rng(0)):
    masks = {"text": np.r_[np.zeros(5, bool), np.ones(T - 5, bool)], "audio": np.ones(T, bool),
             "video": np.zeros(T, bool)}
    feats = {"text": rng.standard_normal((T, 384)), "audio": rng.standard_normal((T, 384)),
             "video": np.zeros((T, 1280))}
    return FeatureCache(stimulus_id="clip", rate_hz=2.0, t0_s=0.0, features=feats, masks=masks,
                        backbones={"text": {"name": "minilm", "revision": "r1", "layer": "pooled", "dim": 384},
                                   "audio": {"name": "whisper-tiny", "revision": "r2", "layer": "encoder", "dim": 384},
                                   "video": {"name": "efficientnet-lite0", "revision": "r3", "layer": "pool", "dim": 1280}},
                        extraction={"context_words": 32}, source="clip.mp4", source_sha256="ab" * 32,
                        timing={"word_onsets": (np.arange(T) % 3 == 0).astype(float), "speech": np.full(T, 0.5)},
                        words=[Word("hello", 2.5, 0.4, 0.9), Word("world", 3.0, 0.5)], words_source="asr: test",
                        provenance=provenance())


def teacher_chunk(n=30, rng=np.random.default_rng(1)):
    return TeacherChunk(chunk_id="clip_000000", stimulus_id="clip", source="clip.mp4", start_s=0.0, end_s=30.0,
                        space="fsaverage4", predictions=rng.standard_normal((n, 5124)),
                        bold_times_s=np.arange(n) + 5.0,
                        activations={"fusion_l4": rng.standard_normal((2 * n, 1152)),
                                     "fusion_l6": rng.standard_normal((2 * n, 1152))},
                        activation_times_s={"fusion_l4": np.arange(2 * n) / 2, "fusion_l6": np.arange(2 * n) / 2},
                        teacher={"id": "facebook/tribev2", "revision": "abc"}, hrf_offset_s=5.0,
                        provenance=provenance())


def test_feature_cache_round_trip(tmp_path):
    fc = feature_cache()
    fc.save(tmp_path / "clip.npz")
    back = FeatureCache.load(tmp_path / "clip.npz")
    for m in fc.features:
        assert back.features[m].dtype == np.float16
        np.testing.assert_array_equal(back.features[m], fc.features[m])
        np.testing.assert_array_equal(back.masks[m], fc.masks[m])
    assert back.backbones == fc.backbones and back.extraction == fc.extraction
    assert back.n_steps == 40 and back.times()[3] == 1.5
    for k in ("word_onsets", "speech"):
        np.testing.assert_array_equal(back.timing[k], fc.timing[k])
    assert back.words == fc.words and back.words[1].confidence is None and back.words_source == "asr: test"
    x = back.model_input("text")
    assert x.shape == (40, 386) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 384], fc.timing["word_onsets"] / np.sqrt(384), rtol=1e-6)
    np.testing.assert_allclose(x[:, 385], fc.timing["speech"] / np.sqrt(384), rtol=1e-6)
    assert back.model_input("audio").shape == (40, 384)


def test_old_feature_caches_are_refused_with_the_command_that_remakes_them(tmp_path):
    """A version-1 cache has no timing channels: it is refused, not padded, and the error says what to run."""
    fc = feature_cache()
    fc.save(tmp_path / "clip.npz")
    _rewrite_meta(tmp_path / "clip.npz", format_version=1)
    with pytest.raises(FormatError, match=r"clip.npz: feature cache version 1 has no word-timing channels .*"
                                          r"tinytribe notebooks 01_extract_features"):
        FeatureCache.load(tmp_path / "clip.npz")
    fc = feature_cache()
    with pytest.raises(FormatError, match="the text stream's timing channel 'word_onsets' is missing"):
        FeatureCache(**{k: getattr(fc, k) for k in fc.__dataclass_fields__ if k != "timing"})


def test_feature_cache_refuses_bad_input(tmp_path):
    fc = feature_cache()
    fc.features["audio"][3, 7] = np.nan
    with pytest.raises(FormatError, match=r"audio features has 1 NaN/Inf values \(first at index \[3, 7\]\)"):
        FeatureCache(**{k: getattr(fc, k) for k in fc.__dataclass_fields__})
    fc = feature_cache()
    fc.masks["video"] = np.ones(39, bool)
    with pytest.raises(FormatError, match="video mask must be"):
        FeatureCache(**{k: getattr(fc, k) for k in fc.__dataclass_fields__})
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FormatError, match="junk.npz: unreadable feature cache"):
        FeatureCache.load(tmp_path / "junk.npz")
    with pytest.raises(FormatError, match="nothere.npz: no such feature cache"):
        FeatureCache.load(tmp_path / "nothere.npz")


def _rewrite_meta(path, **changes):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta.update(changes)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def test_cache_versions_are_checked(tmp_path):
    feature_cache().save(tmp_path / "f.npz")
    _rewrite_meta(tmp_path / "f.npz", format_version=3)
    with pytest.raises(FormatError, match="f.npz: feature cache format_version 3 is not supported"):
        FeatureCache.load(tmp_path / "f.npz")
    teacher_chunk().save(tmp_path / "t.npz")
    _rewrite_meta(tmp_path / "t.npz", format_version=0)
    with pytest.raises(FormatError, match="t.npz: teacher cache format_version 0"):
        TeacherChunk.load(tmp_path / "t.npz")
    feature_cache().save(tmp_path / "g.npz")
    with pytest.raises(FormatError, match="not a tinytribe teacher chunk"):
        TeacherChunk.load(tmp_path / "g.npz")


def test_teacher_chunk_round_trip(tmp_path):
    tc = teacher_chunk()
    tc.save(tmp_path / "t.npz")
    back = TeacherChunk.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.predictions, tc.predictions)
    assert back.predictions.dtype == np.float16 and back.bold_times_s.dtype == np.float64
    np.testing.assert_array_equal(back.bold_times_s, np.arange(30) + 5.0)
    assert set(back.activations) == {"fusion_l4", "fusion_l6"}
    np.testing.assert_array_equal(back.activation_times_s["fusion_l6"], np.arange(60) / 2)
    assert back.teacher == tc.teacher and back.hrf_offset_s == 5.0 and back.space == "fsaverage4"
    with zipfile.ZipFile(tmp_path / "t.npz") as z:  # plain npz: readable by numpy alone, no pickle
        assert "meta.npy" in z.namelist()


def test_teacher_chunk_refuses_bad_shapes():
    tc = teacher_chunk()
    with pytest.raises(FormatError, match=r"predictions must be \(n, 20484\) for fsaverage5"):
        TeacherChunk(**{**{k: getattr(tc, k) for k in tc.__dataclass_fields__}, "space": "fsaverage5"})
    with pytest.raises(FormatError, match="bold_times_s must increase"):
        TeacherChunk(**{**{k: getattr(tc, k) for k in tc.__dataclass_fields__},
                        "bold_times_s": np.zeros(30)})


def study():
    return Study(name="demo", space="fsaverage5", subjects=["sub-01", "sub-02"],
                 stimuli={"clip": StudyStimulus(duration_s=60.0, features="features/clip.npz",
                                                teacher=["teacher/clip_000000.npz"]),
                          "story": StudyStimulus(duration_s=30.0, features="features/story.npz",
                                                 modalities=["text", "audio"])},
                 runs=[StudyRun(subject="sub-01", stimulus="clip", fmri="fmri/sub-01/clip.npy", tr_s=1.49,
                                first_bold_s=0.0),
                       StudyRun(subject="sub-01", stimulus="clip", fmri="fmri/sub-01/clip_rep-1.npy", tr_s=1.49,
                                first_bold_s=0.0, repeat=1),
                       StudyRun(subject="sub-02", stimulus="story", fmri="fmri/sub-02/story.npy",
                                bold_times="fmri/sub-02/story_times.npy")],
                 splits={"train": ["clip"], "test": ["story"]}, medial_wall="medial_wall.npy",
                 provenance=provenance())


def test_study_round_trip_and_validation(tmp_path):
    s = study()
    s.save(tmp_path)
    back = Study.load(tmp_path)
    assert back == s and back.n_outputs == 20484
    data = json.loads((tmp_path / "study.json").read_text())
    data["runs"][0]["subject"] = "sub-09"
    (tmp_path / "study.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="unknown subject 'sub-09'"):
        Study.load(tmp_path)
    data["runs"][0]["subject"] = "sub-01"
    data["space"] = "fsaverage6"
    (tmp_path / "study.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="unknown output space 'fsaverage6'"):
        Study.load(tmp_path)
    with pytest.raises(ValueError, match="give bold_times or both"):
        StudyRun(subject="s", stimulus="c", fmri="f.npy", tr_s=1.5)


def test_spaces():
    assert [space_size(s) for s in ("fsaverage5", "fsaverage4", "schaefer-400", "schaefer-1000", "custom:7")] == \
        [20484, 5124, 400, 1000, 7]
    for bad in ("custom:0", "custom:x", "mni"):
        with pytest.raises(ValueError):
            space_size(bad)


def test_checkpoint_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ck = Checkpoint(model_state=model.state_dict(), config={"d_model": 4, "space": "custom:3"}, phase="kd",
                    step=7, epoch=1, data_position={"epoch_order_seed": 3, "batch": 12},
                    optimizer_state=opt.state_dict(), rng_state={"torch": torch.get_rng_state()},
                    metrics={"val_r": 0.12}, provenance=provenance())
    ck.save(tmp_path / "c.pt")
    back = Checkpoint.load(tmp_path / "c.pt")
    assert back.step == 7 and back.config == ck.config and back.data_position == ck.data_position
    for k, v in model.state_dict().items():
        assert torch.equal(back.model_state[k], v)
    assert torch.equal(back.rng_state["torch"], ck.rng_state["torch"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back.optimizer_state)
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    payload["format_version"] = 5
    torch.save(payload, tmp_path / "d.pt")
    with pytest.raises(FormatError, match="d.pt: checkpoint format_version 5"):
        Checkpoint.load(tmp_path / "d.pt")
    (tmp_path / "e.pt").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="e.pt: unreadable checkpoint"):
        Checkpoint.load(tmp_path / "e.pt")


def test_manifest_round_trip(tmp_path):
    m = Manifest(job="teacher", chunk_s=150.0, items=[
        ManifestItem(id="a_000000", source="a.mp4", start_s=0, end_s=150, status="done", attempts=1,
                     output="teacher/a_000000.npz", output_sha256="00" * 32, timings={"seconds": 70.5}),
        ManifestItem(id="a_000150", source="a.mp4", start_s=150, end_s=212.3, worker="k:1", status="running",
                     lease_until=123.0)], shard_index=1, shard_count=2, created_by=provenance())
    m.save(tmp_path / "m.json")
    assert Manifest.load(tmp_path / "m.json") == m
    with pytest.raises(ValueError, match="duplicate item id"):
        Manifest(job="x", chunk_s=1.0, items=[m.items[0], m.items[0]])
    with pytest.raises(ValueError, match="start_s < end_s"):
        ManifestItem(id="z", source="z", start_s=5, end_s=5)


def test_teacher_chunk_version_1_still_loads(tmp_path):
    """Version 2 added ``events``, ``sample_width_s`` and ``source_sha256``; a version-1 file reads with
    their defaults (no events, 1 s rows, unknown hash)."""
    import io
    import json

    tc = teacher_chunk(n=4)
    tc.events = [{"type": "Video", "start": 0.0}]
    tc.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    for key in ("events", "sample_width_s", "source_sha256"):
        meta.pop(key)
    meta["format_version"] = 1
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    (tmp_path / "v1.npz").write_bytes(buf.getvalue())
    back = TeacherChunk.load(tmp_path / "v1.npz")
    assert back.events == [] and back.sample_width_s == 1.0 and back.source_sha256 == ""
    assert back.format_version == 2
    np.testing.assert_array_equal(back.predictions, tc.predictions)
    assert TeacherChunk.load(tmp_path / "v2.npz").events == tc.events
