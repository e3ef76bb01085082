"""A small deterministic teacher with TRIBE v2's interface, for tests and CI.

The 4.7B-parameter TRIBE v2 cannot run on a CPU-only CI machine, so this stand-in plays its part in
every pipeline test: same protocol, same output space (fsaverage5), rate (1 Hz), HRF offset (5 s)
and activation names and sizes (``fusion_l4``, ``fusion_l6``: 1152-d at 2 Hz). Its outputs are a
fixed function of what is on screen and on the soundtrack -- luminance, luminance change and
loudness at 2 Hz, filtered by causal kernels of 1-8 s, mixed by fixed random matrices -- so
they change with the media, are the same on every machine, and depend only on the past 8.5 s
of stimulus: a window predicted on its own equals the same rows of a whole-file prediction.

It knows nothing about brains; it exists to exercise caching, resuming, stitching and
distillation plumbing with real media, not to be learnt from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytribe.features.decode import audio_rms, frame_luminance, probe_media
from tinytribe.formats import space_size
from tinytribe.teacher.protocol import TeacherInfo, TeacherOutput, grid_times

FEATURE_RATE_HZ = 2.0
TIME_CONSTANTS_S = (1.0, 2.0, 4.0, 8.0)


class StandInTeacher:
    """Deterministic stand-in for TRIBE v2.

    Args:
        seed: fixes the mixing matrices (the stand-in's "weights").
        activation_dim: size of each fusion activation (TRIBE v2: 1152).
        space: output space of the predictions.
    """

    def __init__(self, *, seed: int = 0, activation_dim: int = 1152, space: str = "fsaverage5"):
        self.info = TeacherInfo(id="tinytribe/standin", revision=f"1-seed{seed}", space=space, rate_hz=1.0,
                                hrf_offset_s=5.0, activations={"fusion_l4": activation_dim,
                                                               "fusion_l6": activation_dim})
        rng = np.random.default_rng(seed)
        n_desc = 3 * len(TIME_CONSTANTS_S) + 1
        self._kernel_steps = int(max(TIME_CONSTANTS_S) * FEATURE_RATE_HZ)
        self._w4 = rng.standard_normal((n_desc, activation_dim)).astype(np.float32)
        self._w6 = (rng.standard_normal((activation_dim, activation_dim)) / np.sqrt(activation_dim)).astype(np.float32)
        self._head = (rng.standard_normal((activation_dim, space_size(space))) / np.sqrt(activation_dim)
                      ).astype(np.float32)

    def _descriptors(self, media: Path, start_s: float, end_s: float) -> np.ndarray:
        """(n, 3) luminance, |Δ luminance|, loudness at 2 Hz in ``[start_s, end_s)``; 0 where absent."""
        lum = np.nan_to_num(frame_luminance(media, start_s, end_s, FEATURE_RATE_HZ))
        prev = np.concatenate([[lum[0]], lum[:-1]])
        rms = np.nan_to_num(audio_rms(media, start_s, end_s, FEATURE_RATE_HZ))
        return np.stack([lum, np.abs(lum - prev), 10.0 * rms], axis=1)

    def _filtered(self, desc: np.ndarray) -> np.ndarray:
        """Causal exponential filters of each descriptor, plus a constant: (n, 3 * len(TIME_CONSTANTS_S) + 1)."""
        lags = np.arange(self._kernel_steps) / FEATURE_RATE_HZ
        cols = []
        for tau in TIME_CONSTANTS_S:
            k = np.exp(-lags / tau)
            k /= k.sum()
            for j in range(desc.shape[1]):
                cols.append(np.convolve(desc[:, j], k)[: desc.shape[0]])
        cols.append(np.ones(desc.shape[0]))
        return np.stack(cols, axis=1).astype(np.float32)

    def predict(self, media: Path, start_s: float, end_s: float) -> TeacherOutput:
        media = Path(media)
        probe = probe_media(media)
        end_s = min(end_s, probe.duration_s)
        times = grid_times(start_s, end_s, self.info.rate_hz)              # 1 Hz rows, each 1 s wide
        feat_end = min(probe.duration_s, times[-1] + 1.0 / self.info.rate_hz) if times.size else end_s
        # 1 step more than the kernel, so the first row's |Δ luminance| has its previous frame
        lead = (self._kernel_steps + 1) / FEATURE_RATE_HZ
        t0 = max(0.0, np.floor((start_s - lead) * FEATURE_RATE_HZ) / FEATURE_RATE_HZ)
        desc = self._descriptors(media, t0, feat_end)                     # (n2, 3), 2 Hz from t0
        if t0 == 0.0:
            desc[0, 1] = 0.0  # no frame before the first
        l4 = np.tanh(self._filtered(desc) @ self._w4)                      # (n2, D)
        l6 = np.tanh(l4 @ self._w6)                                        # (n2, D)
        t2 = t0 + np.arange(desc.shape[0]) / FEATURE_RATE_HZ
        keep2 = (t2 >= start_s - 1e-9) & (t2 < end_s - 1e-9)

        # first 2 Hz step of each row; a last row that runs past the media's end repeats its last step
        steps = np.minimum(np.round((times - t0) * FEATURE_RATE_HZ).astype(int), len(l6) - 1)
        pooled = 0.5 * (l6[steps] + l6[np.minimum(steps + 1, len(l6) - 1)])  # (n1, D), mean over [t, t + 1)
        preds = pooled @ self._head                                        # (n1, V)
        events = [{"type": "Video" if probe.has_video else "Audio", "filepath": media.name,
                   "start": float(t0), "duration": float(feat_end - t0)}]
        return TeacherOutput(predictions=preds.astype(np.float32), times_s=times,
                             activations={"fusion_l4": l4[keep2], "fusion_l6": l6[keep2]},
                             activation_times_s={"fusion_l4": t2[keep2], "fusion_l6": t2[keep2]}, events=events)

    def close(self) -> None:
        pass
