"""The feature job: one manifest item = one chunk of one stimulus, cached, then stitched per stimulus.

Chunk files go to ``<out>/chunks/<item id>.npz``; once every chunk of a stimulus is done they are
joined into ``<out>/<stimulus>.npz`` (the feature-cache format that studies point to). A chunk whose
file was made from the same media bytes and transcript with the same backbones and config is not
extracted again; a changed config, backbone or transcript (or an old cache format) re-extracts it.

When the words came from speech recognition they are also written to ``<out>/<stimulus>.words.tsv``
(word, onset, duration, confidence) whenever the stitched features are (re)written: correct it, put it
beside the media as ``<stem>.words.tsv`` and the next run extracts the text from the corrected words.
Done items whose chunk is stale (an old cache format, a changed transcript ...) are sent back to
pending by :func:`reopen_stale` before a run, so the job re-extracts them by itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from tinytribe import manifest as mf
from tinytribe.features.extract import FeatureExtractor, stitch
from tinytribe.features.words import (WORDS_SUFFIX, TranscriptError, is_transcript, read_transcript, stimulus_id,
                                      write_tsv)
from tinytribe.formats import FeatureCache, FormatError, Manifest, ManifestItem


def transcript_only(files: list[Path], media: list[Path]) -> tuple[list[Path], list[str]]:
    """The transcripts among ``files`` that stand for stimuli of their own (no media of that stimulus),
    one per stimulus: where a stimulus has several (``tale.tsv`` and ``tale.words.tsv``), the first in
    the search order of :func:`~tinytribe.features.words.transcript_search` wins. Returns them and a
    line for each transcript left out."""
    have_media = {m.stem for m in media}
    chosen: dict[str, Path] = {}
    notes = []
    for p in sorted(files, key=lambda p: (stimulus_id(p), p.name.lower().endswith(WORDS_SUFFIX), p.name)):
        if not is_transcript(p) or stimulus_id(p) in have_media:
            continue
        sid = stimulus_id(p)
        if sid in chosen:
            notes.append(f"{p.name}: left out, {chosen[sid].name} is stimulus {sid!r}'s transcript (search order)")
        else:
            chosen[sid] = p
    return list(chosen.values()), notes


def reopen_stale(manifest_path: str | Path, media_root: str | Path, extractor: FeatureExtractor) -> list[str]:
    """Send ``done`` items whose chunk is no longer current (an old cache format, changed media or
    transcript, other backbones or config) back to ``pending``, so the job extracts them again.
    Returns their ids."""
    manifest_path, media_root = Path(manifest_path), Path(media_root)
    m = Manifest.load(manifest_path)
    stale = [it.id for it in m.items if it.status == "done" and not (
        it.output and extractor.is_current(manifest_path.parent / it.output, media_root / it.source, it.start_s))]
    if stale:
        with mf.update(manifest_path) as m:
            for it in m.items:
                if it.id in stale:
                    it.status, it.attempts, it.last_error = "pending", 0, None
    return stale


def transcript_durations(paths: list[Path]) -> dict[str, float | Exception]:
    """Durations of transcript-only stimuli: the end of their last word -- or, for a transcript that
    cannot be read, its error, which ``build_manifest`` and ``reconcile`` record as the item's failure
    (one bad transcript never stops the job)."""
    out: dict[str, float | Exception] = {}
    for p in paths:
        try:
            words = read_transcript(p)
        except TranscriptError as e:
            out[str(p)] = e
            continue
        out[str(p)] = max((w.end for w in words), default=0.0)
    return out


def feature_job_work(media_root: str | Path, out_dir: str | Path, extractor: FeatureExtractor
                     ) -> Callable[[ManifestItem], Path]:
    """Work for a ``features`` manifest (see ``tinytribe.runner.run_job``)."""
    media_root, out_dir = Path(media_root), Path(out_dir)

    def work(item: ManifestItem) -> Path:
        src = media_root / item.source
        out = out_dir / "chunks" / f"{item.id}.npz"
        if out.exists() and extractor.is_current(out, src, item.start_s):
            return out
        if is_transcript(src):
            fc = extractor.extract(None, transcript=src, stimulus_id=stimulus_id(src), start_s=item.start_s,
                                   end_s=item.end_s, duration_s=item.end_s)
        else:
            fc = extractor.extract(src, stimulus_id=stimulus_id(src), start_s=item.start_s, end_s=item.end_s)
        return fc.save(out)

    return work


def stitch_done(manifest_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Join the chunks of every stimulus whose items are all done (and write the words of speech
    recognition beside them); returns the stimulus files written."""
    manifest_path, out_dir = Path(manifest_path), Path(out_dir)
    m = Manifest.load(manifest_path)
    by_source: dict[str, list[ManifestItem]] = {}
    for it in m.items:
        by_source.setdefault(it.source, []).append(it)
    written = []
    for source, items in sorted(by_source.items()):
        items = [it for it in items if it.status != "gone"]   # windows of an older version of the file, or of a removed one
        if not items or not all(it.status == "done" for it in items):
            continue
        dest = out_dir / f"{stimulus_id(source)}.npz"
        try:
            chunks = [FeatureCache.load(manifest_path.parent / it.output) for it in items]
        except FormatError as e:   # e.g. a chunk of an old format the job has not re-extracted yet
            warnings.warn(f"{source}: not stitched: {str(e).splitlines()[0]}", stacklevel=2)
            continue
        whole = stitch(chunks)
        tsv = out_dir / f"{whole.stimulus_id}{WORDS_SUFFIX}"
        if dest.exists():
            try:
                old = FeatureCache.load(dest)
            except FormatError:  # an old format or a torn copy: replaced below
                old = None
            if old is not None and old.source_sha256 == whole.source_sha256 and old.n_steps == whole.n_steps \
                    and old.extraction == whole.extraction and old.backbones == whole.backbones \
                    and old.transcript_sha256 == whole.transcript_sha256:
                continue
        written.append(whole.save(dest))
        if whole.words_source.startswith("asr") and whole.words:   # for a user to read, correct, feed back
            write_tsv(tsv, whole.words)
    return written
