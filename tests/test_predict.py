"""Prediction on any media: the TR grid and windows against evaluation's own path, overlap agreement,
bounded memory on 30 minutes, GIFTI/h5/npy outputs read back by nibabel, nilearn and h5py, and the
bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tinytribe.predict import (PredictionError, blend_weights, plan_windows, predict, predict_features,
                               save_prediction)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clip(demo_study):
    return demo_study / "stimuli" / "test01.mp4"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def pred(demo_checkpoint, clip, cache):
    return predict(demo_checkpoint, clip, subject="sub-01", cache_dir=cache)


def test_windows_cover_every_tr_and_blend_to_one():
    for n, size, ov in [(5, 8, 2), (20, 8, 4), (21, 8, 2), (100, 30, 7)]:
        windows = plan_windows(n, size, ov)
        assert windows[0][0] == 0 and sum(windows[-1]) == n and all(w[1] <= size for w in windows)
        cover = np.zeros(n)
        for (f, k), w in zip(windows, blend_weights(windows)):
            assert (w > 0).all()
            cover[f:f + k] += 1
        assert (cover >= 1).all()
        for a, b in zip(windows, windows[1:]):
            assert a[0] + a[1] - b[0] >= min(ov, n)   # each overlaps the next by at least ``ov``


def test_prediction_equals_the_evaluation_path_on_a_demo_run(demo_study, demo_checkpoint):
    """One window over a whole run: the same numbers as ``evaluate.student_predictions`` (which uses the
    training windows), for the same subject's FiLM row; the TR grid starts at the stimulus onset."""
    from tinytribe.data.study import load_study
    from tinytribe.eval.evaluate import student_predictions
    from tinytribe.model.checkpoint import load_checkpoint
    from tinytribe.predict import subject_row
    from tinytribe.spaces import reduce_space

    study = load_study(demo_study)
    model, _ = load_checkpoint(demo_checkpoint)
    i = next(k for k, r in enumerate(study.runs) if r.stimulus == "test01" and r.subject == "sub-02")
    run = study.runs[i]
    assert run.bold_times_s[0] == 0.0
    row, name = subject_row(model.config, "sub-02")
    assert name == "tiny-tribe-demo/sub-02"
    y, times, windows = predict_features(model, study.stimuli["test01"].features, tr_s=run.tr_s, subject=row,
                                         n_trs=len(run.bold_times_s), window=200)
    ref = reduce_space(student_predictions(study, [i], model)[i][0], study.study.space, model.config.space)
    assert windows == [(0, len(times))]
    np.testing.assert_allclose(times, run.bold_times_s, atol=1e-9)
    np.testing.assert_allclose(y, ref, atol=1e-5)
    avg, _, _ = predict_features(model, study.stimuli["test01"].features, tr_s=run.tr_s, n_trs=len(times), window=200)
    assert np.abs(avg - y).max() > 1e-6, "sub-02 has its own FiLM row (3 steps from the average: 4e-5 apart)"


def test_adjacent_windows_agree_in_their_overlaps(demo_study, demo_checkpoint):
    """Tolerance: over each overlap, r >= 0.95 between the two windows' predictions and mean |difference|
    <= 0.15 of the prediction's SD (measured 0.999 / 0.05 here; 0.95 / 0.14 at worst on Phase 2 and 3
    checkpoints of the large demo with 8-TR windows). Without the 16 s lead-in they fall apart."""
    from tinytribe.data.study import load_study
    from tinytribe.model.checkpoint import load_checkpoint

    model, _ = load_checkpoint(demo_checkpoint)
    fc = load_study(demo_study).stimuli["test01"].features
    y, _, windows, parts = predict_features(model, fc, tr_s=1.49, window=8, overlap=4, return_windows=True)
    assert len(windows) >= 3
    for (f0, n0), (f1, _), a, b in zip(windows, windows[1:], parts, parts[1:]):
        a, b = a[f1 - f0:], b[:f0 + n0 - f1]
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.95
        assert np.abs(a - b).mean() <= 0.15 * y.std()
    # the blend: each window weighted by its ramps (rising over its overlap with the previous window,
    # falling over the next), normalised
    total, wsum = np.zeros_like(y, dtype=np.float64), np.zeros(len(y))
    for (f, n), w, part in zip(windows, blend_weights(windows), parts):
        total[f:f + n] += w[:, None] * part
        wsum[f:f + n] += w
        assert (np.diff(w[:windows[1][1] // 2]) >= 0).all() if f > 0 else w[0] == 1.0   # ramps up after the first
    np.testing.assert_allclose(y, total / wsum[:, None], atol=1e-5)
    a, b = blend_weights(windows)[:2]
    ov = windows[0][1] - windows[1][0]
    np.testing.assert_allclose(a[-ov:] / (a[-ov:] + b[:ov]), np.linspace(1, 0, ov + 2)[1:-1], atol=1e-9)   # linear
    np.testing.assert_allclose(y[:windows[1][0]], parts[0][:windows[1][0]], atol=1e-6)   # one window: its own values


MEMORY_SCRIPT = """
import resource, sys, warnings, numpy as np, torch
warnings.simplefilter("error")   # a window longer than the trained length warns: fail instead
sys.path.insert(0, {tests!r})
from tiny import TINY
from tinytribe.formats import FeatureCache
from tinytribe.model import create_model
from tinytribe.predict import predict_features
torch.set_num_threads(2)
minutes = float(sys.argv[1])
n = int(minutes * 60 * 2)
rng = np.random.default_rng(0)
dims = {{"text": 384, "audio": 384, "video": 1280}}
fc = FeatureCache(stimulus_id="long", rate_hz=2.0, t0_s=0.0,
                  features={{m: rng.standard_normal((n, d)).astype(np.float16) for m, d in dims.items()}},
                  masks={{m: np.ones(n, bool) for m in dims}},
                  backbones={{m: {{"name": m, "revision": "synthetic", "dim": d}} for m, d in dims.items()}},
                  extraction={{}}, source="synthetic", source_sha256="", timing={{"word_onsets": np.zeros(n, np.float32),
                  "speech": np.zeros(n, np.float32)}})
model = create_model("tiny-tribe-demo", [o.removeprefix("model.") for o in TINY] + ["trained_steps=300"])
y, t, w = predict_features(model, fc, tr_s=1.49)
print(y.shape[0], len(w), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_thirty_minutes_run_in_bounded_memory(tmp_path, repo, subprocess_env):
    """Peak RSS of a 30-minute input against a 3-minute one: the difference is the longer features and
    output (~40 MB), not attention over 30 minutes (a single pass would need ~10,800 tokens squared)."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT.format(tests=str(repo / "tests" / "train")))
    peaks = {}
    for minutes in (3, 30):
        out = subprocess.run([sys.executable, str(script), str(minutes)], capture_output=True, text=True,
                             env=subprocess_env, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        n_trs, n_windows, peak_mb = map(int, out.stdout.split()[-3:])
        assert n_trs == int(minutes * 60 / 1.49)
        peaks[minutes] = peak_mb
    print(f"peak RSS: 3 min {peaks[3]} MB, 30 min {peaks[30]} MB")
    assert n_windows > 10
    assert peaks[30] - peaks[3] < 120, peaks


def test_outputs_read_back_in_nibabel_nilearn_and_h5py(pred, tmp_path):
    import h5py
    import nibabel as nib
    from nilearn.surface import load_surf_data

    files = save_prediction(pred, tmp_path)
    names = sorted(p.name for p in files)
    assert names == sorted(["test01.npy", "test01.times.npy", "test01.json", "test01.h5",
                            "test01_space-fsaverage4_hemi-L.func.gii", "test01_space-fsaverage4_hemi-R.func.gii"])
    N = pred.responses.shape[0]
    assert N == 20 and pred.tr_s == 1.49 and pred.space == "fsaverage4" and pred.subject == "tiny-tribe-demo/sub-01"
    np.testing.assert_array_equal(np.load(tmp_path / "test01.npy"), pred.responses)
    np.testing.assert_allclose(np.load(tmp_path / "test01.times.npy"), np.arange(N) * 1.49)
    meta = json.loads((tmp_path / "test01.json").read_text())
    assert meta["tr_s"] == 1.49 and meta["checkpoint_phase"] == "fmri" and meta["tr_from"] == "checkpoint"
    with h5py.File(tmp_path / "test01.h5") as h:
        np.testing.assert_array_equal(h["responses"][()], pred.responses)
        np.testing.assert_allclose(h["times_s"][()], pred.times_s)
        assert h.attrs["space"] == "fsaverage4" and json.loads(h.attrs["backbones"])["video"] == "efficientnet-lite0"
    for h, hemi in enumerate("LR"):
        path = tmp_path / f"test01_space-fsaverage4_hemi-{hemi}.func.gii"
        img = nib.load(path)
        assert len(img.darrays) == N and img.darrays[0].data.shape == (2562,)
        assert img.meta["AnatomicalStructurePrimary"] == ("CortexLeft" if hemi == "L" else "CortexRight")
        assert {nib.nifti1.intent_codes.label[d.intent] for d in img.darrays} == {"time series"}
        assert img.darrays[1].meta["TimeStep"] == "1490" and img.darrays[1].meta["Name"] == "1.490 s"
        assert [float(d.meta["time_s"]) for d in img.darrays] == pytest.approx(list(pred.times_s), abs=1e-3)
        data = load_surf_data(str(path))                                   # nilearn's reader: (vertices, time)
        np.testing.assert_allclose(data.T, pred.responses[:, h * 2562:(h + 1) * 2562])


def test_gifti_plots_with_nilearn(demo_checkpoint, clip, cache, tmp_path):
    """An fsaverage5 model's GIFTI goes straight into nilearn's plotting with nilearn's own mesh; an
    fsaverage4 one is drawn on fsaverage5 through each vertex's nearest fsaverage4 parent."""
    import matplotlib

    matplotlib.use("Agg")
    import nibabel as nib
    from nilearn import plotting
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import load_surf_data

    from tinytribe.formats import Checkpoint
    from tinytribe.model.checkpoint import save_checkpoint
    from tinytribe.spaces import upsample_fsaverage4

    from train.tiny import TINY

    from tinytribe.model import create_model

    model5 = create_model("tiny-tribe-demo", [o.removeprefix("model.") for o in TINY] + ["space=fsaverage5"])
    path5 = save_checkpoint(model5, tmp_path / "fs5.pt", phase="fmri")
    assert Checkpoint.load(path5).train_config == {}
    pred5 = predict(path5, clip, cache_dir=cache)
    assert pred5.space == "fsaverage5" and pred5.info["tr_from"] == "default 1.49 s"
    files5 = save_prediction(pred5, tmp_path / "fs5", ["gifti"])
    mesh = load_fsaverage("fsaverage5")
    gii = next(p for p in files5 if "hemi-L" in p.name)
    series = load_surf_data(str(gii))                       # nilearn reads the GIFTI: (10242 vertices, N TRs)
    assert series.shape == (10242, pred5.responses.shape[0])
    fig = plotting.plot_surf_stat_map(mesh["inflated"].parts["left"], series[:, 5], hemi="left", engine="matplotlib")
    fig.savefig(tmp_path / "fs5.png")
    files4 = save_prediction(predict(demo_checkpoint, clip, cache_dir=cache), tmp_path / "fs4", ["gifti"])
    halves = [np.stack([d.data for d in nib.load(p).darrays]) for p in sorted(files4)]   # L, R: (N, 2562)
    on5 = upsample_fsaverage4(np.concatenate(halves, axis=1))[0]
    fig = plotting.plot_surf_stat_map(mesh["inflated"].parts["left"], on5[:10242], hemi="left", engine="matplotlib")
    fig.savefig(tmp_path / "fs4.png")
    assert (tmp_path / "fs5.png").stat().st_size > 10_000 and (tmp_path / "fs4.png").stat().st_size > 10_000


def test_reduced_spaces_and_the_average_subject(demo_checkpoint, clip, cache):
    from tinytribe.spaces import reduce_space

    full = predict(demo_checkpoint, clip, cache_dir=cache)
    parcels = predict(demo_checkpoint, clip, cache_dir=cache, space="schaefer-400")
    assert full.subject == "average" and parcels.responses.shape == (20, 400)
    np.testing.assert_allclose(parcels.responses, reduce_space(full.responses, "fsaverage4", "schaefer-400"), atol=1e-5)
    labels = np.repeat([1, 2], 2562)            # a two-parcel "parcellation": the hemispheres
    halves = predict(demo_checkpoint, clip, cache_dir=cache, parcellation=labels)
    np.testing.assert_allclose(halves.responses[:, 0], full.responses[:, :2562].mean(1), atol=1e-5)
    slow = predict(demo_checkpoint, clip, cache_dir=cache, tr_s=2.0)
    assert slow.responses.shape[0] == 15 and slow.info["tr_from"] == "given"


def test_the_tr_defaults_to_the_checkpoints(demo_checkpoint, clip, cache, tmp_path):
    from tinytribe.formats import Checkpoint

    ck = Checkpoint.load(demo_checkpoint)
    assert ck.train_config["data"] == {"backbones": {"text": "minilm", "audio": "whisper-tiny",
                                                     "video": "efficientnet-lite0"}, "tr_s": 1.49}
    ck.train_config["data"]["tr_s"] = 2.5                     # as if trained on a study with a 2.5 s TR
    pred = predict(ck.save(tmp_path / "tr25.pt"), clip, cache_dir=cache)
    assert pred.tr_s == 2.5 and pred.responses.shape[0] == 12 and pred.info["tr_from"] == "checkpoint"


def test_the_cache_is_reused_until_the_transcript_changes(tmp_path):
    from tinytribe.features.extract import FeatureExtractor
    from tinytribe.predict import cached_features

    tale = tmp_path / "tale.tsv"
    tale.write_text("word\tonset\tduration\nonce\t0.5\t0.4\nupon\t1.0\t0.3\n")
    ex = FeatureExtractor()
    first = cached_features(tale, tmp_path / "cache", ex)
    ex.timings.clear()
    again = cached_features(tale, tmp_path / "cache", ex)
    assert ex.timings == {} and again.n_steps == first.n_steps           # from the cache: nothing extracted
    tale.write_text("word\tonset\tduration\nonce\t0.5\t0.4\nupon\t1.0\t0.3\na\t1.5\t0.2\ntime\t2.0\t0.4\n")
    changed = cached_features(tale, tmp_path / "cache", ex)
    assert "text backbone" in ex.timings and len(changed.words) == 4


def test_offline_revisions_are_known_without_loading_the_backbones():
    from tinytribe.features.extract import FeatureExtractor

    ex = FeatureExtractor()
    quick = {m: ex.revision(m) for m in ("text", "audio", "video")}
    assert ex._models == {}, "a cache check loads no backbone"
    assert quick == {m: ex.backbone(m).revision for m in quick}


def test_bad_inputs_say_what_was_expected_and_given(demo_checkpoint, clip, cache, tmp_path):
    from tinytribe.data.demo.stimuli import write_media
    from tinytribe.features.extract import FeatureExtractor
    from tinytribe.formats import Checkpoint
    from tinytribe.model import TinyTribe
    from tinytribe.model.config import ModelConfig

    with pytest.raises(PredictionError, match=r"subject 'sub-09' is not in this checkpoint \(its subjects: "
                                              r"tiny-tribe-demo/sub-01, .*; or 'average'\)"):
        predict(demo_checkpoint, clip, subject="sub-09", cache_dir=cache)
    with pytest.raises(PredictionError, match=r"space 'fsaverage5': this checkpoint predicts fsaverage4, which "
                                              r"reduces only to fsaverage4, schaefer-400, schaefer-1000"):
        predict(demo_checkpoint, clip, space="fsaverage5", cache_dir=cache)
    with pytest.raises(PredictionError, match=r"parcellation has 400 labels; the predictions have 5124 outputs"):
        predict(demo_checkpoint, clip, parcellation=np.ones(400, int), cache_dir=cache)
    # a checkpoint trained on other video features
    ck = Checkpoint.load(demo_checkpoint)
    ck.train_config["data"]["backbones"]["video"] = "mobilevit-s"
    other = ck.save(tmp_path / "mobilevit.pt")
    with pytest.raises(PredictionError, match=r"test01.mp4: video features are efficientnet-lite0, the checkpoint "
                                              r"was trained on mobilevit-s"):
        predict(other, clip, cache_dir=cache, extractor=FeatureExtractor())
    # input sizes that do not fit (a checkpoint without recorded backbones)
    ck = Checkpoint.load(demo_checkpoint)
    ck.train_config = {}
    ck.config["input_dims"] = [386, 384, 640]                 # MobileViT-S sized video inputs
    ck.model_state = TinyTribe(ModelConfig(**ck.config)).state_dict()
    small = ck.save(tmp_path / "dims.pt")
    with pytest.raises(PredictionError, match=r"video features have 1280 values per step \(efficientnet-lite0\), "
                                              r"the checkpoint expects 640"):
        predict(small, clip, cache_dir=cache)
    # a clip shorter than one TR (its features round up to 1.5 s: the media's own length counts)
    short = tmp_path / "blink.mp4"
    write_media(short, [np.full((120, 160, 3), 128, np.uint8)] * 12, None)    # 1.2 s at 10 fps
    with pytest.raises(PredictionError, match=r"blink: 1.20 s of media is shorter than one TR \(1.49 s\)"):
        predict(demo_checkpoint, short, cache_dir=cache)
    with pytest.raises(PredictionError, match=r"give space \('schaefer-400'\) or a parcellation, not both"):
        predict(demo_checkpoint, clip, cache_dir=cache, space="schaefer-400", parcellation=np.ones(5124, int))
    with pytest.raises(PredictionError, match=r"overlap of 8 TRs: must be at least 0 and less than the window"):
        plan_windows(100, 8, 8)


def test_the_cli_predicts_a_folder_and_refuses_an_unknown_subject(demo_checkpoint, demo_study, tmp_path, capsys):
    from tinytribe.cli import main

    media = tmp_path / "media"
    media.mkdir()
    (media / "radio01.mp3").symlink_to(demo_study / "stimuli" / "radio01.mp3")   # audio only
    (media / "tale.tsv").write_text("word\tonset\tduration\nonce\t0.5\t0.4\nupon\t1.0\t0.3\na\t1.4\t0.1\n"
                                    "time\t1.6\t0.4\n" + "".join(f"word{i}\t{2 + i * 0.5}\t0.3\n" for i in range(30)))
    out = tmp_path / "out"
    assert main(["predict", str(demo_checkpoint), str(media), "--out", str(out), "--subject", "sub-03",
                 "--movie", "none", "--formats", "npy"]) == 0
    assert (out / "radio01.npy").is_file() and (out / "tale.npy").is_file()
    assert (out / "radio01_timecourses.png").is_file() and (out / "radio01_maps.png").is_file()
    page = (out / "radio01_report.html").read_text()      # one self-contained page: pictures inlined
    assert page.count("data:image/png;base64,") == 2 and "://" not in page and "tiny-tribe-demo/sub-03" in page
    meta = json.loads((out / "tale.json").read_text())
    assert meta["modalities"] == ["text"] and meta["subject"] == "tiny-tribe-demo/sub-03"
    assert json.loads((out / "radio01.json").read_text())["modalities"] == ["text", "audio"]   # ASR words
    capsys.readouterr()
    assert main(["predict", str(demo_checkpoint), str(media), "--out", str(out), "--subject", "nobody"]) == 2
    assert "tinytribe: error: subject 'nobody' is not in this checkpoint" in capsys.readouterr().err
    (media / "tale.srt").write_text("1\n00:00:00,500 --> 00:00:01,000\nonce\n")   # a second stimulus 'tale'
    other = tmp_path / "other"
    other.mkdir()
    (other / "tale.mp3").symlink_to(demo_study / "stimuli" / "radio01.mp3")
    assert main(["predict", str(demo_checkpoint), str(media / "tale.tsv"), str(other), "--out", str(out)]) == 2
    assert "tale.tsv and " in capsys.readouterr().err


def test_the_extractor_follows_the_checkpoints_backbones(demo_checkpoint):
    from tinytribe.formats import Checkpoint
    from tinytribe.predict import extractor_for

    ck = Checkpoint.load(demo_checkpoint)
    ck.train_config["data"]["backbones"]["video"] = "mobilevit-s"
    ex = extractor_for(ck, device="cpu", video_model="/models/mobilevit")
    assert (ex.config.video, ex.config.video_model, ex.config.device) == ("mobilevit-s", "/models/mobilevit", "cpu")


def test_the_movie_has_one_frame_per_tr_beside_the_clip(pred, clip, tmp_path):
    from PIL import Image

    from tinytribe.eval.movie import movie_frames, write_movie

    gif = write_movie(pred, clip, tmp_path / "brain.gif")
    with Image.open(gif) as im:
        assert im.n_frames == pred.responses.shape[0] and im.info["duration"] == 1490
    first = next(movie_frames(pred, clip))
    brain_only = next(movie_frames(pred, None))
    assert first.shape[0] == brain_only.shape[0] == 150 and first.shape[1] > brain_only.shape[1] + 150
    mp4 = write_movie(pred, clip, tmp_path / "brain.mp4")
    from tinytribe.features.decode import probe_media

    info = probe_media(mp4)
    assert info.has_video and abs(info.duration_s - pred.responses.shape[0] * 1.5) < 1.0
