"""Lazy studies: window items read by rows from the cache files equal the loaded ones, also through a
DataLoader with worker processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinytribe.data.lazy import NpzArrays, WindowDataset
from tinytribe.data.study import load_study
from tinytribe.data.windows import collate, make_stimulus_windows, make_windows, window_item
from tinytribe.formats import FormatError


@pytest.fixture(scope="module")
def both(demo_study):
    return load_study(demo_study), load_study(demo_study, lazy=True)


def _same(a: dict, b: dict) -> None:
    for key in ("features", "masks"):
        for m in a[key]:
            np.testing.assert_array_equal(a[key][m], b[key][m])
    np.testing.assert_allclose(a["teacher"], b["teacher"], atol=2e-3)       # z-scored from fp16 rows either way
    np.testing.assert_array_equal(a["teacher_times_s"], b["teacher_times_s"])
    for n in a["teacher_acts"]:
        np.testing.assert_array_equal(a["teacher_acts"][n], b["teacher_acts"][n])
        np.testing.assert_array_equal(a["teacher_act_times_s"][n], b["teacher_act_times_s"][n])
    assert a["t0"] == b["t0"] and a["subject"] == b["subject"]


def test_lazy_windows_equal_loaded_windows(both):
    eager, lazy = both
    assert type(lazy.stimuli["story01"].features).__name__ == "LazyFeatures"
    for w in make_windows(eager, eager.split("test"), n_trs=10)[:6] + make_windows(eager, eager.split("train"), n_trs=25)[:6]:
        _same(window_item(eager, w), window_item(lazy, w))
    for w in make_stimulus_windows(eager, ["story01", "test02"], length_s=12.0):
        _same(window_item(eager, w), window_item(lazy, w))
    assert [x.word for x in lazy.stimuli["story01"].features.words] == \
        [x.word for x in eager.stimuli["story01"].features.words]
    np.testing.assert_allclose(lazy.stimuli["test01"].teacher.predictions, eager.stimuli["test01"].teacher.predictions,
                               atol=2e-3)


def test_a_dataloader_with_workers_gives_the_same_batches(both):
    eager, lazy = both
    windows = make_stimulus_windows(lazy, None, length_s=10.0)[:8]
    loader = torch.utils.data.DataLoader(WindowDataset(lazy, windows), batch_size=4, num_workers=2,
                                         collate_fn=collate, multiprocessing_context="fork")
    batches = list(loader)
    ref = collate([window_item(eager, w) for w in windows[:4]])
    assert len(batches) == 2
    for m in ref["features"]:
        torch.testing.assert_close(batches[0]["features"][m], ref["features"][m])
    torch.testing.assert_close(batches[0]["teacher"], ref["teacher"], atol=2e-3, rtol=0)


def test_npz_members_are_read_by_rows_and_compressed_files_refused(tmp_path):
    a = np.arange(60, dtype=np.float16).reshape(20, 3)
    np.savez(tmp_path / "x.npz", a=a, s=np.array("text"))
    z = NpzArrays(tmp_path / "x.npz")
    np.testing.assert_array_equal(z.rows("a", 5, 9), a[5:9])
    np.testing.assert_array_equal(z.rows("a", 18, 40), a[18:])
    assert z.rows("a", 25, 30).shape == (0, 3) and str(z.whole("s")) == "text"
    np.savez(tmp_path / "f.npz", a=np.asfortranarray(a))                  # older caches: column-major members
    np.testing.assert_array_equal(NpzArrays(tmp_path / "f.npz").rows("a", 5, 9), a[5:9])
    np.savez_compressed(tmp_path / "c.npz", a=a)
    with pytest.raises(FormatError, match="c.npz: member a.npy is compressed"):
        NpzArrays(tmp_path / "c.npz")


def test_a_lazy_study_holds_no_open_files_and_refuses_overlapping_chunks(demo_study, broken_copy):
    import json
    import os

    before = len(os.listdir("/proc/self/fd"))
    s = load_study(demo_study, lazy=True)
    window_item(s, make_windows(s, s.split("test"), n_trs=10)[0])
    assert len(os.listdir("/proc/self/fd")) == before                 # opened and closed per read
    path = broken_copy / "study.json"
    data = json.loads(path.read_text())
    data["stimuli"]["story01"]["teacher"] *= 2                         # the same chunk listed twice
    path.write_text(json.dumps(data))
    from tinytribe.data.study import StudyError

    with pytest.raises(StudyError, match="teacher chunks of story01 overlap in time"):
        load_study(broken_copy, lazy=True)
