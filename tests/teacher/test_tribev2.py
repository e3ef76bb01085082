"""The TRIBE v2 adapter on a small model with TRIBE's inference interface and x-transformers 1.27.20's
real Encoder: hook placement, event cutting, window stitching, and the worker process protocol."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("x_transformers")
from tinytribe.teacher import tribev2_worker as w  # noqa: E402
from tinytribe.teacher.tribev2 import TeacherError, TribeV2Teacher  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import fake_tribe  # noqa: E402


def test_pinned_x_transformers_layout():
    import importlib.metadata

    assert importlib.metadata.version("x-transformers") == "1.27.20", "the hook test needs TRIBE v2's pinned version"


def test_hooks_read_the_residual_stream_after_blocks_4_and_6():
    model = fake_tribe.FusionModel(n_outputs=8, n_out_steps=4)
    enc = model.encoder
    mods = w.residual_stream_modules(enc, w.DEFAULT_BLOCKS)
    seen = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, n=n: seen.__setitem__(n, out)) for n, m in mods.items()]
    x = torch.randn(2, 12, 128)
    with torch.no_grad():
        _, inter = enc(x, return_hiddens=True)
    for h in handles:
        h.remove()
    # x-transformers records each attention sub-layer's input: block k's output is block k+1's input
    torch.testing.assert_close(seen["fusion_l4"], inter.hiddens[4])
    torch.testing.assert_close(seen["fusion_l6"], inter.hiddens[6])
    assert not torch.allclose(seen["fusion_l4"], inter.layer_hiddens[4])  # not encoder.layers[3]'s output
    with pytest.raises(ValueError, match="block 9 is not"):
        w.residual_stream_modules(enc, {"x": 9})


def test_events_are_cut_to_the_segment_grid():
    ev = pd.DataFrame([
        {"type": "Video", "start": 0.0, "duration": 24.0, "offset": 0.0, "text": None},
        {"type": "Audio", "start": 3.0, "duration": 30.0, "offset": 2.0, "text": None},
        {"type": "Word", "start": 9.9, "duration": 0.3, "offset": None, "text": "before"},
        {"type": "Word", "start": 10.0, "duration": 0.3, "offset": None, "text": "at"},
        {"type": "Word", "start": 19.9, "duration": 0.3, "offset": None, "text": "last"},
        {"type": "Word", "start": 20.0, "duration": 0.3, "offset": None, "text": "after"}])
    assert w.aligned_window(12.0, 18.0, 0.0, 10.0) == (10.0, 20.0)
    assert w.aligned_window(150.0, 300.0, 0.0, 100.0) == (100.0, 300.0)
    cut = w.clip_events(ev, 10.0, 20.0)
    video, audio = cut[cut.type == "Video"].iloc[0], cut[cut.type == "Audio"].iloc[0]
    assert (video.start, video.duration, video.offset) == (10.0, 10.0, 10.0)
    assert (audio.start, audio.duration, audio.offset) == (10.0, 10.0, 9.0)  # file time 2 + (10 - 3)
    assert list(cut[cut.type == "Word"].text) == ["at", "last"]
    assert cut.start.min() == 10.0


@pytest.fixture(scope="module")
def fake(media_dir):
    model = fake_tribe.load(n_outputs=64, duration_trs=10)
    return model, model.get_events_dataframe(video_path=str(media_dir / "astronaut_tour.mp4"))


def test_windows_stitch_to_the_whole_file_run(fake):
    model, events = fake
    whole = w.predict_window(model, events, 0.0, 24.0)
    parts = [w.predict_window(model, events, a, b) for a, b in ((0.0, 7.0), (7.0, 15.0), (15.0, 24.0))]
    assert whole["predictions"].shape == (24, 64)
    np.testing.assert_array_equal(whole["times_s"], np.arange(24.0))
    for key in ("predictions", "act__fusion_l4", "act__fusion_l6"):
        stitched = np.concatenate([p[key] for p in parts])
        np.testing.assert_allclose(stitched, whole[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(np.concatenate([p["act_times__fusion_l4"] for p in parts]), np.arange(48) / 2)
    assert whole["act__fusion_l6"].shape == (48, 128)
    # the window's own events, cut to the segments around it
    vid = [e for e in parts[1]["events"] if e["type"] == "Video"][0]
    assert (vid["start"], vid["duration"], vid["offset"]) == (0.0, 20.0, 0.0)
    vid = [e for e in parts[2]["events"] if e["type"] == "Video"][0]
    assert (vid["start"], vid["offset"]) == (10.0, 10.0)


def test_no_row_is_lost_in_silence(fake, media_dir):
    model, _ = fake
    # only a video event and no words at all: with TRIBE's default every row would still be kept here,
    # so drop the video too between 10 s and 20 s and check the rows of that empty stretch come back
    ev = pd.DataFrame([{"type": "Video", "start": 0.0, "duration": 10.0, "offset": 0.0, "filepath": "x"},
                       {"type": "Video", "start": 20.0, "duration": 4.0, "offset": 20.0, "filepath": "x"}])
    out = w.predict_window(model, ev, 0.0, 24.0)
    np.testing.assert_array_equal(out["times_s"], np.arange(24.0))
    model.remove_empty_segments = True
    kept = model.predict(ev, verbose=False)[0]
    assert kept.shape[0] == 14  # what TRIBE's default would have returned


def test_worker_process_round_trip(media_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    clip = media_dir / "astronaut_tour.mp4"
    with TribeV2Teacher(python=sys.executable, factory="fake_tribe:load", home=tmp_path,
                        factory_kwargs={"n_outputs": 20484, "duration_trs": 10}) as teacher:
        assert teacher.info.rate_hz == 1.0 and teacher.info.hrf_offset_s == 5.0
        assert teacher.info.activations == {"fusion_l4": 128, "fusion_l6": 128}
        out = teacher.predict(clip, 12.0, 24.0)
        assert out.predictions.shape == (12, 20484) and out.times_s[0] == 12.0
        assert {e["type"] for e in out.events} == {"Video", "Audio", "Word"}
        with pytest.raises(TeacherError, match="missing.mp4: media file not found"):
            teacher.predict(tmp_path / "missing.mp4", 0.0, 10.0)
        again = teacher.predict(clip, 12.0, 24.0)  # the worker survives an error
        np.testing.assert_array_equal(again.predictions, out.predictions)
    assert list((tmp_path / "tribev2-events").glob("astronaut_tour-*.json")), "events are cached per file"
    local = fake_tribe.load(n_outputs=20484, duration_trs=10)
    ref = w.predict_window(local, local.get_events_dataframe(video_path=str(clip)), 12.0, 24.0)
    np.testing.assert_allclose(out.predictions, ref["predictions"], rtol=1e-5, atol=1e-6)


def test_worker_reports_a_bad_factory(tmp_path):
    with pytest.raises(TeacherError, match="teacher load: ModuleNotFoundError"):
        TribeV2Teacher(python=sys.executable, factory="no_such_module:load", home=tmp_path)


def _tiny_wheel(folder: Path, version: str) -> Path:
    """A minimal pure-Python wheel (installable offline, without a build backend)."""
    import zipfile

    path = folder / f"ttprobe-{version}-py3-none-any.whl"
    info = f"ttprobe-{version}.dist-info"
    files = {"ttprobe.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: ttprobe\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.mark.slow
def test_teacher_environment_is_built_once_and_rebuilt_on_change(tmp_path):
    import subprocess

    from tinytribe.teacher.tribev2 import ensure_env

    env = tmp_path / "env"
    py = ensure_env(env, source=str(_tiny_wheel(tmp_path, "1.0")))
    version = subprocess.run([str(py), "-c", "import ttprobe; print(ttprobe.VERSION)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == "1.0"
    stamp = (env / "tinytribe-env.json").stat().st_mtime_ns
    assert ensure_env(env, source=str(tmp_path / "ttprobe-1.0-py3-none-any.whl")) == py  # reused
    assert (env / "tinytribe-env.json").stat().st_mtime_ns == stamp
    ensure_env(env, source=str(_tiny_wheel(tmp_path, "2.0")))  # another source: rebuilt
    version = subprocess.run([str(py), "-c", "import ttprobe; print(ttprobe.VERSION)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == "2.0"
    with pytest.raises(TeacherError, match="pip could not install .*missing.whl"):
        ensure_env(tmp_path / "env2", source=str(tmp_path / "missing.whl"))
