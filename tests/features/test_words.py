"""Transcript readers: TextGrid, SRT, VTT, TSV, Algonauts 2025 TSV; and their errors."""

from __future__ import annotations

import pytest

from tinytribe.features.words import TranscriptError, Word, find_transcript, read_transcript

TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"
xmin = 0
xmax = 3.0
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 3.0
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 3.0
            text = "AH"
    item [2]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 3.0
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = "sp"
        intervals [2]:
            xmin = 0.5
            xmax = 1.1
            text = "hello"
        intervals [3]:
            xmin = 1.1
            xmax = 2.0
            text = "world"
        intervals [4]:
            xmin = 2.0
            xmax = 3.0
            text = ""
'''


def test_textgrid_word_tier_skips_silence(tmp_path):
    p = tmp_path / "a.TextGrid"
    p.write_text(TEXTGRID)
    assert read_transcript(p) == [Word("hello", 0.5, pytest.approx(0.6)), Word("world", 1.1, pytest.approx(0.9))]


def test_srt_and_vtt(tmp_path):
    srt = tmp_path / "a.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello there\n\n2\n00:00:03,500 --> 00:00:04,500\n<i>General</i> Kenobi\n")
    words = read_transcript(srt)
    assert [w.word for w in words] == ["Hello", "there", "General", "Kenobi"]
    assert [w.onset for w in words] == [1.0, 1.5, 3.5, 4.0] and words[0].duration == 0.5
    vtt = tmp_path / "a.vtt"
    vtt.write_text("WEBVTT\n\n00:01.000 --> 00:02.000\n<v Ana>Hello there\n")
    assert [(w.word, w.onset) for w in read_transcript(vtt)] == [("Hello", 1.0), ("there", 1.5)]


def test_plain_tsv_and_algonauts_tsv(tmp_path):
    plain = tmp_path / "p.tsv"
    plain.write_text("word\tonset\tduration\nthe\t0.2\t0.1\ndog\t0.4\t0.3\n")
    assert read_transcript(plain) == [Word("the", 0.2, 0.1), Word("dog", 0.4, 0.3)]
    alg = tmp_path / "friends_s01e01a.tsv"
    alg.write_text("text_per_tr\twords_per_tr\tonsets_per_tr\tdurations_per_tr\n"
                   "\t[]\t[]\t[]\n"
                   "Hi Ross.\t['Hi', 'Ross.']\t[1.6, 1.9]\t[0.2, 0.4]\n"
                   "\t[]\t[]\t[]\n"
                   "How are\t['How', 'are']\t[4.5, 4.7]\t[0.2, 0.1]\n")
    assert [(w.word, w.onset) for w in read_transcript(alg)] == [("Hi", 1.6), ("Ross.", 1.9), ("How", 4.5), ("are", 4.7)]
    alg.write_text("text_per_tr\twords_per_tr\tonsets_per_tr\tdurations_per_tr\nx\t['a', 'b']\t[1.0]\t[0.1, 0.2]\n")
    with pytest.raises(TranscriptError, match=r"friends_s01e01a.tsv: row 2 has 2 words, 1 onsets"):
        read_transcript(alg)


def test_transcript_errors(tmp_path, media_dir):
    bad = tmp_path / "notes.docx"
    bad.write_text("x")
    with pytest.raises(TranscriptError, match="notes.docx: unsupported transcript format '.docx'"):
        read_transcript(bad)
    with pytest.raises(TranscriptError, match="gone.srt: no such transcript"):
        read_transcript(tmp_path / "gone.srt")
    late = tmp_path / "late.srt"
    late.write_text("1\n00:01:00,000 --> 00:01:01,000\nlate words\n")
    with pytest.raises(TranscriptError, match=r"late.srt: words run to 60.5 s, past the media's 24.0 s"):
        read_transcript(late, duration_s=24.0)
    wrong = tmp_path / "w.tsv"
    wrong.write_text("a\tb\n1\t2\n")
    with pytest.raises(TranscriptError, match=r"w.tsv: TSV needs columns word \(or text\) and onset"):
        read_transcript(wrong)
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "clip.srt").write_text("")
    assert find_transcript(tmp_path / "clip.mp4") == tmp_path / "clip.srt"


def test_tsv_without_durations_lasts_to_the_next_onset_and_says_so(tmp_path):
    p = tmp_path / "w.tsv"
    p.write_text("text\tonset\nhello\t1.0\nthere\t1.4\nfriend\t4.0\n")
    with pytest.warns(UserWarning, match="no duration column: each word lasts until the next word's onset, at most 1 s"):
        words = read_transcript(p)
    assert [(w.word, w.onset, round(w.duration, 6)) for w in words] == [("hello", 1.0, 0.4), ("there", 1.4, 1.0),
                                                                       ("friend", 4.0, 1.0)]
    p.write_text("word\tduration\nhello\t0.3\n")
    with pytest.raises(TranscriptError, match="TSV needs columns word .or text. and onset"):
        read_transcript(p)


def test_transcript_search_order_and_what_it_says(tmp_path):
    from tinytribe.features.words import transcript_search

    media = tmp_path / "clip.mp4"
    media.write_bytes(b"")
    found, how = transcript_search(media)
    assert found is None and how.startswith("no transcript (clip.{TextGrid,srt,vtt,tsv} or clip.words.tsv")
    (tmp_path / "transcripts").mkdir()
    (tmp_path / "transcripts" / "clip.srt").write_text("")
    (tmp_path / "transcripts" / "other.srt").write_text("")
    assert transcript_search(media) == (tmp_path / "transcripts" / "clip.srt", "clip.srt (in transcripts/, same stem)")
    (tmp_path / "clip.words.tsv").write_text("")
    assert transcript_search(media) == (tmp_path / "clip.words.tsv", "clip.words.tsv (beside the media)")
    (tmp_path / "clip.TextGrid").write_text("")
    assert transcript_search(media) == (tmp_path / "clip.TextGrid", "clip.TextGrid (beside the media, same stem)")
    assert find_transcript(media) == tmp_path / "clip.TextGrid"


def test_a_transcript_without_words_is_refused_not_taken_as_silence(tmp_path):
    from tinytribe.features.words import EmptyTranscriptError

    prose = tmp_path / "talk.srt"
    prose.write_text("This is the talk's summary, not subtitles.\n\nIt has no cues.\n")
    with pytest.raises(EmptyTranscriptError, match=r"talk.srt: no words in it .* remove it to use speech recognition"):
        read_transcript(prose)
    empty = tmp_path / "talk.tsv"
    empty.write_text("word\tonset\tduration\n")
    with pytest.raises(EmptyTranscriptError, match="talk.tsv: no words"):
        read_transcript(empty)


def test_encodings_are_read_or_refused_by_name(tmp_path):
    latin = tmp_path / "cafe.tsv"
    latin.write_bytes("word\tonset\tduration\ncaf\u00e9\t0.5\t0.3\n".encode("latin-1"))
    with pytest.raises(TranscriptError, match=r"cafe.tsv: not UTF-8: byte 0xe9 at offset 23 \(line 2\)"):
        read_transcript(latin)
    grid = tmp_path / "cafe.TextGrid"
    grid.write_bytes(TEXTGRID.replace("hello", "caf\u00e9").encode("latin-1"))
    with pytest.raises(TranscriptError, match="cafe.TextGrid: not UTF-8: byte 0xe9"):
        read_transcript(grid)
    praat = tmp_path / "praat.TextGrid"   # Praat's UTF-16 with a byte-order mark is read as such
    praat.write_bytes(TEXTGRID.replace("hello", "caf\u00e9").encode("utf-16"))
    assert "caf\u00e9" in [w.word for w in read_transcript(praat)]


def test_impossible_times_are_named(tmp_path):
    inf = tmp_path / "inf.tsv"
    inf.write_text("word\tonset\tduration\nhello\t0.5\tinf\n")
    with pytest.raises(TranscriptError, match=r"inf.tsv: word 'hello' has onset 0.5 and duration inf \(both must be finite"):
        read_transcript(inf)
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:0x,000\nhello world\n")
    with pytest.raises(TranscriptError, match=r"bad.srt: malformed cue timing '00:00:01,000 --> 00:00:0x,000'"):
        read_transcript(bad)
    backwards = tmp_path / "back.vtt"
    backwards.write_text("WEBVTT\n\n00:05.000 --> 00:04.000\nhello\n")
    with pytest.raises(TranscriptError, match="ends before it starts"):
        read_transcript(backwards)


def test_transcript_coverage_of_the_speech_heard():
    from tinytribe.features.words import transcript_coverage

    heard = [Word(w, t, 0.3) for w, t in zip("the north wind and the sun were arguing".split(), range(0, 16, 2))]
    assert transcript_coverage(heard, heard) == 1.0
    assert transcript_coverage(heard[:2], heard) == pytest.approx(2 / 8)
    assert transcript_coverage(heard[:2] + [Word("wnd", 3.0, 0.3)], heard) == pytest.approx(3 / 8), "1 s of slack"
    assert transcript_coverage([], heard) == 0.0 and transcript_coverage(heard, []) == 1.0
    long_word = [Word("monologue", 0.0, 20.0)]   # one long interval covers every onset inside it
    assert transcript_coverage(long_word + [Word("x", 1.0, 0.1)], heard) == 1.0


def test_cues_without_milliseconds_and_a_cut_utf16_file(tmp_path):
    plain = tmp_path / "plain.srt"
    plain.write_text("1\n00:00:01 --> 00:00:03\nhello there\n")
    assert [(w.word, w.onset) for w in read_transcript(plain)] == [("hello", 1.0), ("there", 2.0)]
    cut = tmp_path / "cut.srt"
    cut.write_bytes("1\n00:00:01,000 --> 00:00:03,000\nhello\n".encode("utf-16")[:-1])
    with pytest.raises(TranscriptError, match="cut.srt: UTF-16 text cut short or damaged"):
        read_transcript(cut)
