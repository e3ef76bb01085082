"""A one-story study the project has never seen, built the way a user builds their own: one spoken
story (a word-aligned TextGrid, no audio file), ROI time courses (``custom:6``, named) of 8 subjects
who each heard it twice, and a held-out last fifth of the story (a time-range split with a gap).

The story's words are the demo's five fables, read at a rate that changes from passage to passage
(fast, slow, pauses), so that word rate carries real signal. Features come from the real text
backbone (MiniLM) through the normal extraction path. Responses: per ROI, the word rate and a
projection of the text features, each through the SPM HRF, with subject-specific gains and AR(1)
noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe.data.splits import time_folds
from tinytribe.formats import FeatureCache, Study, StudyRun, StudyStimulus

ROIS = ["auditory L", "auditory R", "STS L", "IFG L", "angular L", "precuneus"]
TR = 2.0
N_SUBJECTS = 8
WORD_WEIGHT = np.array([1.0, 0.9, 0.7, 0.4, 0.2, 0.0])   # how much of each ROI word rate drives
TEXT_WEIGHT = np.array([0.0, 0.0, 0.3, 0.5, 0.6, 0.5])   # ... and the text features
NOISE = 0.6


def write_textgrid(path: Path, words: list[tuple[str, float, float]], duration: float) -> None:
    """A long-format Praat TextGrid with one word tier (silences as empty intervals)."""
    intervals, t = [], 0.0
    for w, a, b in words:
        if a > t + 1e-6:
            intervals.append((t, a, ""))
        intervals.append((a, b, w))
        t = b
    if duration > t:
        intervals.append((t, duration, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "words"', "        xmin = 0", f"        xmax = {duration}",
             f"        intervals: size = {len(intervals)}"]
    for k, (a, b, w) in enumerate(intervals, start=1):
        lines += [f"        intervals [{k}]:", f"            xmin = {a:.3f}", f"            xmax = {b:.3f}",
                  f'            text = "{w}"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def story_words(seed: int = 0) -> tuple[list[tuple[str, float, float]], float]:
    """The five fables, told twice, read sentence by sentence at changing rates with pauses between
    them: (word, onset, end) and the story's duration."""
    from tinytribe.data.demo.stimuli import FABLES

    rng = np.random.default_rng(seed)
    words, t = [], 2.0
    for text in [*FABLES.values(), *FABLES.values()]:             # told twice, read differently
        sentences = [s.strip() for s in text.replace("!", ".").split(".") if s.strip()]
        for sentence in sentences:
            rate = rng.choice([1.2, 2.0, 3.5])                  # words per second in this sentence
            for w in sentence.split():
                d = 0.8 / rate + 0.2 / rate * rng.random()
                words.append((w, round(t, 3), round(t + d, 3)))
                t += 1.0 / rate
            t += rng.choice([0.4, 1.5, 6.0])                    # a pause after each sentence
    return words, float(np.ceil(t + 10.0))


def hrf(tr: float, oversampling: int) -> np.ndarray:
    from nilearn.glm.first_level import spm_hrf

    return spm_hrf(tr, oversampling=oversampling, time_length=24.0)


def build_story_study(root: Path, extractor, seed: int = 0) -> Path:
    """Write the study into ``root`` (features through ``extractor``) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    words, duration = story_words(seed)
    write_textgrid(root / "story.TextGrid", words, duration)
    fc = extractor.extract(None, stimulus_id="story", transcript=root / "story.TextGrid", duration_s=duration)
    text_only = FeatureCache(stimulus_id="story", rate_hz=fc.rate_hz, t0_s=fc.t0_s,
                             features={"text": fc.features["text"]}, masks={"text": fc.masks["text"]},
                             backbones={"text": fc.backbones["text"]}, extraction=fc.extraction, source=fc.source,
                             source_sha256=fc.source_sha256, timing=fc.timing, words=fc.words,
                             words_source=fc.words_source, transcript_sha256=fc.transcript_sha256,
                             provenance=fc.provenance)
    text_only.save(root / "features" / "story.npz")

    rng = np.random.default_rng(seed + 1)
    fine = 10                                                     # drivers at 10 Hz
    t_fine = np.arange(int(duration * fine)) / fine
    onsets = np.zeros_like(t_fine)
    np.add.at(onsets, np.minimum((np.array([a for _, a, _ in words]) * fine).astype(int), onsets.size - 1), 1.0)
    text = fc.features["text"].astype(np.float64)[np.minimum((t_fine * fc.rate_hz).astype(int), fc.n_steps - 1)]
    text_drive = text @ rng.standard_normal((text.shape[1], len(ROIS)))
    kernel = hrf(1.0 / fine, 1)
    drivers = []
    for x in (onsets[:, None] * np.ones(len(ROIS)), text_drive):
        conv = np.stack([np.convolve(x[:, k], kernel)[: t_fine.size] for k in range(len(ROIS))], axis=1)
        drivers.append((conv - conv.mean(0)) / conv.std(0))
    n_tr = int(duration // TR)

    def tr_mean(x: np.ndarray) -> np.ndarray:  # the mean over each [tau, tau + TR)
        return x[: n_tr * int(TR * fine)].reshape(n_tr, int(TR * fine), -1).mean(1)

    word_tr, text_tr = tr_mean(drivers[0]), tr_mean(drivers[1])
    subjects = [f"sub-{i + 1:02d}" for i in range(N_SUBJECTS)]
    runs = []
    for s in subjects:
        gain = 1.0 + 0.3 * rng.standard_normal(len(ROIS))
        clean = gain * (WORD_WEIGHT * word_tr + TEXT_WEIGHT * text_tr)
        for rep in range(2):
            noise = np.zeros_like(clean)
            e = rng.standard_normal(clean.shape)
            for k in range(n_tr):
                noise[k] = 0.5 * noise[k - 1] + e[k] if k else e[k]
            y = (clean + NOISE * noise / noise.std(0)).astype(np.float32)
            rel = f"fmri/{s}/story_rep-{rep}.npy"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(root / rel, y)
            runs.append(StudyRun(subject=s, stimulus="story", fmri=rel, tr_s=TR, first_bold_s=0.0, repeat=rep))

    study = Study(name="one-story", space=f"custom:{len(ROIS)}", subjects=subjects,
                  stimuli={"story": StudyStimulus(duration_s=duration, features="features/story.npz",
                                                  modalities=["text"], words="story.TextGrid")},
                  runs=runs, splits={}, output_names=ROIS)
    study.save(root)
    from tinytribe.data.study import load_study

    fold = time_folds(load_study(root, teacher=False), 5)[-1]   # the last fifth held out, 3 TRs of gap
    study.splits = {"train": fold["train"], "test": fold["test"]}
    study.save(root)
    return root
