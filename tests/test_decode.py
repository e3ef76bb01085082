"""Media probing on real files, and one-line errors for bad ones."""

from __future__ import annotations

import pytest

from tinytribe.features.decode import MediaError, probe_media


def test_probe_bundled_media(media_dir):
    a = probe_media(media_dir / "astronaut_tour.mp4")
    assert a.has_video and a.has_audio and a.duration_s == pytest.approx(24.0, abs=0.1)
    assert (a.width, a.height, a.fps, a.sample_rate) == (160, 120, 10.0, 16000)
    c = probe_media(media_dir / "coffee_still.mp4")
    assert c.has_video and not c.has_audio and c.duration_s == pytest.approx(12.0, abs=0.1)
    s = probe_media(media_dir / "north_wind_story.mp3")
    assert s.has_audio and not s.has_video and 15 < s.duration_s < 17


@pytest.mark.parametrize("name,content,reason", [
    ("empty.mp4", b"", "empty file"),
    ("notes.mp4", b"hello, I am a text file\n" * 40, "not a readable media file"),
])
def test_bad_media_errors_name_the_file(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(MediaError, match=f"{name}: {reason}") as e:
        probe_media(p)
    assert "\n" not in str(e.value)


def test_truncated_and_missing(tmp_path, media_dir):
    data = (media_dir / "astronaut_tour.mp4").read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[:2000])  # the moov atom is gone
    with pytest.raises(MediaError, match="cut.mp4"):
        probe_media(p)
    with pytest.raises(MediaError, match="missing.mp4: no such file"):
        probe_media(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="is a folder"):
        probe_media(tmp_path)
