"""Word timing in the text stream, transcript-only stimuli, and the words of speech recognition saved
for a user to correct and feed back."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from tinytribe.budget import SessionBudget
from tinytribe.features.cache import feature_job_work, stitch_done
from tinytribe.features.extract import ExtractionConfig, FeatureExtractor
from tinytribe.features.words import read_tsv
from tinytribe.formats import FeatureCache, Manifest
from tinytribe.runner import run_job

WORDS = [("once", 1.0, 0.3), ("upon", 1.3, 0.25), ("a", 1.55, 0.1), ("time", 1.7, 0.6), ("there", 4.25, 0.3),
         ("lived", 4.6, 0.4), ("a", 5.1, 0.1), ("fox", 5.2, 0.5), ("who", 9.0, 0.2)]


@pytest.fixture
def transcript(tmp_path):
    path = tmp_path / "tale.tsv"
    path.write_text("word\tonset\tduration\n" + "".join(f"{w}\t{o}\t{d}\n" for w, o, d in WORDS))
    return path


def test_timing_channels_count_onsets_and_speech(transcript):
    ex = FeatureExtractor(ExtractionConfig(device="cpu"))
    fc = ex.extract(None, transcript=transcript, duration_s=12.0)
    onsets = np.zeros(fc.n_steps)
    speech = np.zeros(fc.n_steps)
    for _, o, d in WORDS:
        onsets[math.floor(o * 2 + 1e-9)] += 1
        for k in range(fc.n_steps):                          # seconds of step [k/2, k/2 + 0.5) inside the word
            speech[k] += max(0.0, min(k / 2 + 0.5, o + d) - max(k / 2, o)) * 2
    np.testing.assert_array_equal(fc.timing["word_onsets"], onsets)
    np.testing.assert_allclose(fc.timing["speech"], np.minimum(speech, 1.0), atol=1e-6)
    assert fc.timing["word_onsets"][3] == 2 and fc.timing["speech"][12:18].max() == 0   # a burst; a pause
    assert fc.masks["text"][12:18].all()                    # while the embedding is carried through the pause
    assert [w.word for w in fc.words] == [w for w, _, _ in WORDS] and fc.words_source.startswith("transcript: tale.tsv")


def test_a_transcript_only_stimulus_loads_only_the_text_backbone(transcript):
    ex = FeatureExtractor(ExtractionConfig(device="cpu"))
    fc = ex.extract(None, transcript=transcript, duration_s=12.0)
    assert set(ex._models) == {"text"}                       # Whisper and EfficientNet never loaded
    assert fc.backbones["audio"]["revision"] is None and fc.backbones["video"]["revision"] is None
    assert fc.backbones["text"]["revision"] is not None and fc.backbones["video"]["dim"] == 1280
    path = fc.save(transcript.parent / "tale.npz")
    assert ex.is_current(path, transcript, 0.0) and set(ex._models) == {"text"}
    transcript.write_text(transcript.read_text().replace("fox", "hare"))      # a corrected transcript
    assert not ex.is_current(path, transcript, 0.0)


@pytest.mark.slow
def test_asr_words_are_saved_and_a_corrected_file_is_fed_back(extractor, media_dir, tmp_path):
    from tinytribe import manifest as mf

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(media_dir / "north_wind_story.mp3", media / "story.mp3")
    run = tmp_path / "run"
    m = mf.build_manifest([media / "story.mp3"], job="features", chunk_s=60.0, relative_to=media)
    m.save(run / "manifest.json")
    work = feature_job_work(media, run, extractor)
    run_job(run / "manifest.json", work, budget=SessionBudget.starting_now(None), progress=False)
    stitch_done(run / "manifest.json", run)
    fc = FeatureCache.load(run / "story.npz")
    assert fc.words_source.startswith("asr: ") and len(fc.words) > 20
    saved = run / "story.words.tsv"
    assert saved.read_text().splitlines()[0] == "word\tonset\tduration\tconfidence"
    back = read_tsv(saved)
    assert [w.word for w in back] == [w.word for w in fc.words]
    assert all(0.0 <= w.confidence <= 1.0 for w in back)
    np.testing.assert_allclose([w.onset for w in back], [w.onset for w in fc.words], atol=1e-3)

    lines = saved.read_text().splitlines()                   # the user corrects one word, feeds the file back
    fields = lines[3].split("\t")
    fields[0] = "Boreas"
    (media / "story.words.tsv").write_text("\n".join(lines[:3] + ["\t".join(fields)] + lines[4:]) + "\n")
    item = Manifest.load(run / "manifest.json").items[0]
    assert not extractor.is_current(run / "chunks" / f"{item.id}.npz", media / "story.mp3", 0.0)
    work(item)                                               # what the job does for a stale chunk
    stitch_done(run / "manifest.json", run)
    fixed = FeatureCache.load(run / "story.npz")
    assert fixed.words_source == "transcript: story.words.tsv (beside the media)"
    assert fixed.words[2].word == "Boreas" and fc.words[2].word != "Boreas"
    assert not np.allclose(fixed.features["text"].astype(float), fc.features["text"].astype(float))


def test_one_transcript_per_text_only_stimulus_in_search_order(tmp_path):
    from tinytribe.features.cache import stimulus_id, transcript_only  # stimulus_id: from words, re-exported

    for name in ("tale.tsv", "tale.words.tsv", "fable.words.tsv", "clip.srt", "clip.mp4"):
        (tmp_path / name).write_text("")
    files = sorted(tmp_path.iterdir())
    chosen, notes = transcript_only(files, [tmp_path / "clip.mp4"])
    assert [p.name for p in chosen] == ["fable.words.tsv", "tale.tsv"]    # clip.srt belongs to clip.mp4
    assert notes == ["tale.words.tsv: left out, tale.tsv is stimulus 'tale''s transcript (search order)"]
    assert stimulus_id(tmp_path / "fable.words.tsv") == "fable" and stimulus_id(tmp_path / "A.WORDS.tsv") == "A"


def test_a_transcript_only_cache_key_ignores_the_backbones_it_never_used(transcript):
    ex = FeatureExtractor(ExtractionConfig(device="cpu"))
    path = ex.extract(None, transcript=transcript, duration_s=12.0).save(transcript.parent / "tale.npz")
    other = FeatureExtractor(ExtractionConfig(device="cpu", video_model="/somewhere/else", asr=False,
                                              asr_lead_s=10.0))
    other._models = ex._models
    assert other.is_current(path, transcript, 0.0)                      # settings of unused modalities
    resized = FeatureExtractor(ExtractionConfig(device="cpu", video="mobilevit-s"))
    resized._models = ex._models
    assert not resized.is_current(path, transcript, 0.0)                # 640-d zero video: re-extract
    context = FeatureExtractor(ExtractionConfig(device="cpu", context_words=4))
    context._models = ex._models
    assert not context.is_current(path, transcript, 0.0)


def test_an_old_run_folder_is_brought_up_to_date(extractor, transcript, tmp_path):
    """Finished chunks of feature cache 1 (a run folder from before the timing channels) are sent back
    to pending and extracted again; stitching skips a stimulus it cannot read yet, with a warning."""
    import json

    from tinytribe import manifest as mf
    from tinytribe.features.cache import reopen_stale

    media = transcript.parent
    run = tmp_path / "run"
    mf.build_manifest([transcript], job="features", chunk_s=6.0, relative_to=media,
                      durations={str(transcript): 12.0}).save(run / "manifest.json")
    work = feature_job_work(media, run, extractor)
    run_job(run / "manifest.json", work, budget=SessionBudget.starting_now(None), progress=False)
    chunk = run / "chunks" / "tale_000006.npz"
    with np.load(chunk) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["format_version"] = 1
    np.savez(chunk, meta=np.array(json.dumps(meta)), **arrays)
    with pytest.warns(UserWarning, match="tale.tsv: not stitched: .*feature cache version 1"):
        assert stitch_done(run / "manifest.json", run) == []
    assert reopen_stale(run / "manifest.json", media, extractor) == ["tale_000006"]
    report = run_job(run / "manifest.json", work, budget=SessionBudget.starting_now(None), progress=False)
    assert report.summary.done == 2 and [p.name for p in stitch_done(run / "manifest.json", run)] == ["tale.npz"]
    assert FeatureCache.load(run / "tale.npz").n_steps == 24
    assert reopen_stale(run / "manifest.json", media, extractor) == []
