"""Extraction on the bundled media: masks, grids, chunks equal to whole files, cache reuse, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tinytribe import manifest as mf
from tinytribe.budget import SessionBudget
from tinytribe.features.cache import feature_job_work, stitch_done, transcript_durations
from tinytribe.features.extract import ExtractionConfig, FeatureExtractor, stitch
from tinytribe.features.words import write_tsv
from tinytribe.formats import FeatureCache, Manifest
from tinytribe.runner import run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whole(extractor, media_dir):
    return {p.stem: extractor.extract(p) for p in sorted(media_dir.iterdir())}


def test_masks_follow_what_each_file_holds(whole):
    a, c, s = whole["astronaut_tour"], whole["coffee_still"], whole["north_wind_story"]
    assert a.n_steps == 48 and a.t0_s == 0 and a.rate_hz == 2.0
    assert a.masks["video"].all() and a.masks["audio"].all()
    assert a.masks["text"][:20].all()  # narration over the first 14 s
    assert {m: a.features[m].shape[1] for m in a.features} == {"text": 384, "audio": 384, "video": 1280}
    assert c.masks["video"].all() and not c.masks["audio"].any() and not c.masks["text"].any()  # silent clip
    assert not s.masks["video"].any() and s.masks["audio"][:31].all() and s.masks["text"][2:25].all()  # a story
    assert not np.abs(c.features["audio"]).any()  # masked steps hold zeros
    # the cut from the astronaut to the cat at 12 s shows in the video features
    v = a.features["video"].astype(np.float32)
    within = np.linalg.norm(v[20] - v[22])
    across = np.linalg.norm(v[22] - v[25])
    assert across > 2 * within


def test_chunks_equal_the_whole_file(extractor, media_dir, whole):
    src = media_dir / "astronaut_tour.mp4"
    chunks = [extractor.extract(src, start_s=s, end_s=e) for s, e in ((0, 10.5), (10.5, 24))]
    joined = stitch(chunks)
    ref = whole["astronaut_tour"]
    for m in joined.features:
        np.testing.assert_array_equal(joined.masks[m], ref.masks[m])
        np.testing.assert_allclose(joined.features[m].astype(np.float32), ref.features[m].astype(np.float32), atol=1e-3)
    for k in ref.timing:
        np.testing.assert_array_equal(joined.timing[k], ref.timing[k])
    assert [w.word for w in joined.words] == [w.word for w in ref.words] and len(ref.words) > 10
    assert joined.words_source == ref.words_source and ref.words_source.startswith("asr: ")


def test_carried_text_at_a_chunk_boundary_equals_the_whole_file(extractor, tmp_path):
    """Two words start in the step just before a chunk boundary: the chunk carries their mean, as the
    whole file does."""
    path = tmp_path / "tale.tsv"
    path.write_text("word\tonset\tduration\nonce\t1.5\t0.2\nupon\t1.7\t0.2\na\t4.2\t0.2\ntime\t4.4\t0.3\n")
    whole_fc = extractor.extract(None, transcript=path, duration_s=8.0)
    parts = stitch([extractor.extract(None, transcript=path, start_s=a, end_s=b, duration_s=8.0)
                    for a, b in ((0.0, 2.0), (2.0, 8.0))])
    np.testing.assert_allclose(parts.features["text"].astype(np.float32), whole_fc.features["text"].astype(np.float32),
                               atol=1e-3)
    np.testing.assert_array_equal(parts.masks["text"], whole_fc.masks["text"])


def test_stitch_refuses_chunks_of_two_stimuli(whole):
    with pytest.raises(ValueError, match="chunks of different stimuli cannot be stitched: astronaut_tour, north_wind_story"):
        stitch([whole["astronaut_tour"], whole["north_wind_story"]])


def test_a_transcript_beside_the_media_replaces_asr(extractor, media_dir, tmp_path):
    shutil.copy(media_dir / "coffee_still.mp4", tmp_path / "clip.mp4")
    (tmp_path / "clip.tsv").write_text("word\tonset\tduration\nfresh\t2.0\t0.4\ncoffee\t2.6\t0.5\nbeans\t9.0\t0.3\n")
    fc = extractor.extract(tmp_path / "clip.mp4")
    text = fc.masks["text"]
    assert not text[:4].any() and text[4:10].all()  # from the first word (2.0 s), carried for 5 s
    assert text[18] and not fc.masks["audio"].any()
    only = tmp_path / "story.srt"
    only.write_text("1\n00:00:01,000 --> 00:00:03,000\nonce upon a time\n")
    t = extractor.extract(None, transcript=only, duration_s=6.0)
    assert t.n_steps == 12 and t.masks["text"][2] and not t.masks["video"].any() and not t.masks["audio"].any()
    assert transcript_durations([only]) == {str(only): 3.0}


def test_feature_job_resumes_reuses_and_reextracts(extractor, media_dir, tmp_path):
    media = tmp_path / "media"
    shutil.copytree(media_dir, media)
    (media / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    (media / "empty.wav").write_bytes(b"")
    (media / "readme.mp3").write_text("this is not audio\n")
    (media / "coffee_still.srt").write_text("1\n00:01:00,000 --> 00:01:01,000\nway past the end\n")
    import av

    with av.open(str(media / "zero.mp4"), "w") as c:  # a 0-second video: a header, no frames
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height = 64, 48
        c.start_encoding()
    errors = []
    m = mf.build_manifest(sorted(media.iterdir()), job="features", chunk_s=12.0, relative_to=media, max_attempts=1,
                          on_error=lambda s, e: errors.append(str(e)))
    assert {e.split(":")[0].rsplit("/", 1)[-1] for e in errors} >= {"broken.mp4", "empty.wav", "readme.mp3", "zero.mp4"}
    assert all("\n" not in e for e in errors)
    path = tmp_path / "run" / "manifest.json"
    m.save(path)
    work = feature_job_work(media, tmp_path / "run", extractor)
    report = run_job(path, work, budget=SessionBudget.starting_now(None), progress=False)
    failed = {i: msg for i, msg in report.failed}
    assert set(failed) == {"coffee_still_000000"} and "coffee_still.srt: words run to 60.8 s, past the media" in failed["coffee_still_000000"]
    unreadable = {it.source: it.last_error for it in Manifest.load(path).items if it.note}
    assert set(unreadable) == {"broken.mp4", "empty.wav", "readme.mp3", "zero.mp4"}, "recorded as failed, not left out"
    assert report.summary.failed == 5 and report.summary.done == report.summary.total - 5  # the rest completed
    stitched = {p.name for p in stitch_done(path, tmp_path / "run")}
    assert stitched == {"astronaut_tour.npz", "north_wind_story.npz"}
    first = (tmp_path / "run" / "chunks" / "astronaut_tour_000000.npz").stat().st_mtime_ns
    it = Manifest.load(path).item("astronaut_tour_000000")
    assert work(it).stat().st_mtime_ns == first  # cached: same media, backbones and config
    changed = FeatureExtractor(ExtractionConfig(device="cpu", context_words=8))
    changed._models = extractor._models  # same backbones, another text context
    assert not changed.is_current(tmp_path / "run" / "chunks" / "astronaut_tour_000000.npz",
                                  media / "astronaut_tour.mp4", 0.0)
    fc = FeatureCache.load(feature_job_work(media, tmp_path / "run", changed)(it))
    assert fc.extraction["context_words"] == 8


def test_the_timing_table_has_no_rate_when_nothing_was_extracted():
    from tinytribe.features.extract import timing_table

    assert timing_table({"asr": 3.0}, 0.0) == "timing: no media extracted in this session (nothing to time)"
    table = timing_table({"asr": 3.0, "video": 6.0}, 60.0)
    assert "asr                  3.00             0.050" in table and "0.100" in table


def test_an_empty_transcript_is_refused_or_replaced_by_asr(extractor, media_dir, tmp_path):
    from tinytribe.features.words import EmptyTranscriptError

    shutil.copy(media_dir / "north_wind_story.mp3", tmp_path / "story.mp3")
    (tmp_path / "story.srt").write_text("The North Wind and the Sun, read aloud.\n")   # prose, no cues
    with pytest.raises(EmptyTranscriptError, match="story.srt: no words"):
        extractor.extract(tmp_path / "story.mp3")
    extractor.config.empty_transcript = "asr"
    try:
        with pytest.warns(UserWarning, match="transcribing the audio instead"):
            fc = extractor.extract(tmp_path / "story.mp3")
    finally:
        extractor.config.empty_transcript = "error"
    assert fc.words_source.startswith("asr") and fc.masks["text"].any() and len(fc.words) > 10


def test_an_opt_in_check_flags_a_transcript_of_part_of_the_speech(extractor, media_dir, tmp_path):
    import warnings

    shutil.copy(media_dir / "north_wind_story.mp3", tmp_path / "story.mp3")
    heard = extractor.extract(tmp_path / "story.mp3").words   # what speech recognition hears
    write_tsv(tmp_path / "story.tsv", heard[:3])               # a transcript of its first three words only
    extractor.config.transcript_check = 0.8
    try:
        with pytest.warns(UserWarning, match=r"story.tsv: covers \d+% of the \d+ words speech recognition hears"):
            partial = extractor.extract(tmp_path / "story.mp3")
        write_tsv(tmp_path / "story.tsv", heard)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            whole = extractor.extract(tmp_path / "story.mp3")
    finally:
        extractor.config.transcript_check = 0.0
    assert partial.words_source.startswith("transcript") and len(partial.words) == 3
    assert whole.words_source.startswith("transcript")


def test_a_truncated_file_keeps_what_decodes_and_says_where_it_ends(extractor, media_dir, tmp_path):
    import av

    whole = tmp_path / "faststart.mp4"   # the index at the front, as streaming encoders write it
    with av.open(str(media_dir / "astronaut_tour.mp4")) as i, av.open(str(whole), "w", options={"movflags": "faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams if s.type in ("audio", "video")}
        for pkt in i.demux():
            if pkt.dts is not None and pkt.stream.index in streams:
                pkt.stream = streams[pkt.stream.index]
                o.mux(pkt)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])   # a download that stopped half way
    with pytest.warns(UserWarning, match=r"cut.mp4: audio decoding stopped at \d+\.\d+ s .* truncated or damaged"):
        fc = extractor.extract(cut)
    assert fc.n_steps == 48, "the file's own duration"
    for m in ("audio", "video"):
        steps = np.flatnonzero(fc.masks[m])
        assert steps[0] == 0 and 8 <= steps[-1] < 30 and fc.masks[m][:steps[-1]].all(), m   # the first seconds kept


def test_a_bad_transcript_only_stimulus_fails_its_item_not_the_job(tmp_path):
    from tinytribe.features.cache import transcript_durations

    good, bad = tmp_path / "good.tsv", tmp_path / "bad.tsv"
    good.write_text("word\tonset\tduration\nonce\t0.5\t0.3\n")
    bad.write_bytes("word\tonset\tduration\ncaf\u00e9\t0.5\t0.3\n".encode("latin-1"))
    durations = transcript_durations([good, bad])
    m = mf.build_manifest([good, bad], job="features", chunk_s=10, durations=durations, on_error=lambda s, e: None)
    by = {it.source.rsplit("/", 1)[-1]: it for it in m.items}
    assert by["good.tsv"].status == "pending"
    assert by["bad.tsv"].status == "failed" and "bad.tsv: not UTF-8: byte 0xe9" in by["bad.tsv"].last_error
