"""Splits inside a run: time ranges, disjointness, contiguous folds with a gap, windows that respect them,
and version-1 study files that still load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinytribe.data.splits import time_folds
from tinytribe.data.study import StudyError, load_study
from tinytribe.data.windows import make_windows
from tinytribe.formats import SplitRange


def _edit(root, change):
    path = root / "study.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_time_range_selects_those_samples_of_every_run(story_study):
    s = load_study(story_study)
    (test,), (train,) = s.study.splits["test"], s.study.splits["train"]
    assert isinstance(test, SplitRange) and test.start_s - train.end_s == pytest.approx(6.0)  # 3 TRs of gap
    sel, tr = s.split("test"), s.split("train")
    assert len(sel) == len(s.runs) == 16 and len(tr) == 16               # every run of the story, both splits
    for i, run in enumerate(s.runs):
        tau = run.bold_times_s
        np.testing.assert_array_equal(sel.mask(i), tau >= test.start_s)
        np.testing.assert_array_equal(tr.mask(i), tau < train.end_s)
        assert not (sel.mask(i) & tr.mask(i)).any()
        assert (~sel.mask(i) & ~tr.mask(i)).sum() == 3                   # the gap belongs to neither
    assert sel.n_samples() == 16 * int((tau >= test.start_s).sum())


def test_overlapping_splits_are_refused_naming_both(story_copy, broken_copy):
    _edit(story_copy, lambda d: d["splits"]["test"].__setitem__(0, {"stimulus": "story", "start_s": 280.0,
                                                                    "end_s": 400.0}))
    with pytest.raises(StudyError, match=r"splits 'train' and 'test' overlap: story\[0, 289.2\) s and "
                                         r"story\[280, 400\) s"):
        load_study(story_copy)
    _edit(story_copy, lambda d: d["splits"]["test"].__setitem__(0, "story"))
    with pytest.raises(StudyError, match=r"overlap: story\[0, 289.2\) s and story \(whole\)"):
        load_study(story_copy)
    _edit(broken_copy, lambda d: d["splits"]["val"].append("test01"))
    with pytest.raises(StudyError, match=r"splits 'val' and 'test' overlap: test01 \(whole\) and test01 \(whole\)"):
        load_study(broken_copy)


def test_bad_split_parts_name_the_key(story_copy):
    _edit(story_copy, lambda d: d["splits"]["test"].__setitem__(0, {"stimulus": "story", "start": 1.0, "end_s": 2.0}))
    with pytest.raises(StudyError, match=r"splits.test\[0\]: unknown key 'start'"):
        load_study(story_copy)
    _edit(story_copy, lambda d: d["splits"]["test"].__setitem__(0, {"stimulus": "story", "start_s": 5.0, "end_s": 2.0}))
    with pytest.raises(StudyError, match="needs finite start_s < end_s"):
        load_study(story_copy)
    _edit(story_copy, lambda d: d["splits"]["test"].__setitem__(0, {"stimulus": "tale", "start_s": 0.0, "end_s": 2.0}))
    with pytest.raises(StudyError, match="split 'test' names unknown stimulus 'tale'"):
        load_study(story_copy)


def test_time_folds_tile_the_story_with_gaps(story_study):
    s = load_study(story_study)
    folds = time_folds(s, 5)
    run = 0
    n = s.runs[run].fmri.shape[0]
    tested = np.zeros(n, int)
    for fold in folds:
        train, test = s.select(fold["train"]).mask(run), s.select(fold["test"]).mask(run)
        assert not (train & test).any()
        tested += test
        t_train, t_test = s.runs[run].bold_times_s[train], s.runs[run].bold_times_s[test]
        gaps = np.abs(t_train[:, None] - t_test[None, :]).min()
        assert gaps >= 3 * 2.0 - 1e-6                                   # 3 TRs between any train and test sample
        assert test.sum() + train.sum() >= n - 2 * 3                    # only the gaps are left out
    np.testing.assert_array_equal(tested, 1)                            # every sample is tested exactly once
    with pytest.raises(ValueError, match="k >= 2"):
        time_folds(s, 1)


def test_windows_stay_inside_their_split(story_study):
    s = load_study(story_study)
    test = s.split("test")
    for w in make_windows(s, test, n_trs=10):
        assert test.mask(w.run)[w.first:w.first + w.n].all()
    train = s.split("train")
    ws = make_windows(s, train, n_trs=50)
    assert all(train.mask(w.run)[w.first:w.first + w.n].all() for w in ws)
    assert sum(w.n for w in ws) == train.n_samples()                   # and cover it all


def test_version_1_study_files_load_unchanged(broken_copy):
    before = load_study(broken_copy, teacher=False)

    def to_v1(d):
        d["format_version"] = 1
        d.pop("output_names")
        for st in d["stimuli"].values():
            st.pop("words"), st.pop("media")

    _edit(broken_copy, to_v1)
    after = load_study(broken_copy, teacher=False)
    assert after.study.format_version == 1 and after.study.splits == before.study.splits
    assert after.split("test").masks.keys() == before.split("test").masks.keys()
    _edit(broken_copy, lambda d: d.__setitem__("format_version", 3))
    with pytest.raises(StudyError, match="study format_version 3 is not supported"):
        load_study(broken_copy)


def test_a_version_1_study_without_modalities_takes_them_from_its_caches(story_copy):
    """Version 1 had no `modalities` default problem to speak of: absent, they are the modalities the
    feature cache has content for (here a text-only cache), not all three."""
    def to_v1(d):
        d["format_version"] = 1
        d.pop("output_names")
        st = d["stimuli"]["story"]
        for k in ("modalities", "words", "media"):
            st.pop(k)

    _edit(story_copy, to_v1)
    s = load_study(story_copy)
    assert s.stimuli["story"].modalities == ["text"] and s.study.stimuli["story"].modalities is None


def test_a_time_range_that_holds_no_sample_is_reported(story_copy):
    _edit(story_copy, lambda d: d["splits"].__setitem__("val", [{"stimulus": "story", "start_s": 500.0,
                                                                 "end_s": 600.0}]))
    with pytest.warns(UserWarning, match=r"split 'val' part story\[500, 600\) s holds no BOLD sample of any run"):
        s = load_study(story_copy)
    assert len(s.split("val")) == 0
