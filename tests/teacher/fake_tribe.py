"""A small model with TRIBE v2's inference interface, for testing the adapter without the 4.7B teacher.

It mirrors what ``tribev2.demo_utils.TribeModel`` does at inference (read from
facebookresearch/tribev2): events → segments of ``duration_trs * TR`` seconds from the first event,
``stride_drop_incomplete=False``; the fusion model maps 2 Hz features of a segment through an
x-transformers ``Encoder`` (the real class, 8 blocks) to one output per TR; ``predict`` splits every
segment into TR-long sub-segments and drops those with no events unless
``remove_empty_segments=False``. Features are a fixed function of the events -- video and audio of
their *file* time (``offset + t - start``), words of their text -- so cutting events wrongly shows up
as different numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from torch import nn

FEATURE_HZ = 2
N_FEATURES = 6


@dataclass
class Segment:
    start: float
    duration: float
    ns_events: list = field(default_factory=list)

    def copy(self, offset: float, duration: float) -> "Segment":
        s, e = self.start + offset, self.start + offset + duration
        return Segment(s, duration, [ev for ev in self.ns_events if ev["start"] < e and ev["stop"] > s])


@dataclass
class Batch:
    segments: list[Segment]
    data: dict

    def to(self, device) -> "Batch":
        return self


class FusionModel(nn.Module):
    def __init__(self, n_outputs: int, n_out_steps: int, dim: int = 128):
        super().__init__()
        from x_transformers import Encoder

        torch.manual_seed(0)
        self.proj = nn.Linear(N_FEATURES, dim)
        self.encoder = Encoder(dim=dim, depth=8, heads=4, attn_dim_head=dim // 4, use_scalenorm=True,
                               rotary_pos_emb=True, scale_residual=True)
        self.head = nn.Linear(dim, n_outputs)
        self.pool = nn.AdaptiveAvgPool1d(n_out_steps)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.encoder(self.proj(batch.data["x"]))        # (B, T, dim)
        return self.pool(self.head(x).transpose(1, 2))      # (B, V, T')


def _features(events: pd.DataFrame, seg: Segment) -> np.ndarray:
    n = int(round(seg.duration * FEATURE_HZ))
    t = seg.start + (np.arange(n) + 0.5) / FEATURE_HZ
    x = np.zeros((n, N_FEATURES), np.float32)
    for ev in events.itertuples():
        inside = (t >= ev.start) & (t < ev.start + ev.duration)
        if ev.type in ("Video", "Audio"):
            ft = ev.offset + t[inside] - ev.start
            j = 0 if ev.type == "Video" else 2
            x[inside, j], x[inside, j + 1] = np.sin(0.37 * ft), np.cos(0.11 * ft)
        elif ev.type == "Word":
            k = int((ev.start - seg.start) * FEATURE_HZ)
            if 0 <= k < n:
                rng = np.random.default_rng(zlib.crc32(ev.text.encode()))
                x[k, 4:] += rng.standard_normal(2)
    return x


def events_for(path: str, duration: float, video: bool = True) -> pd.DataFrame:
    """TRIBE-like events of a file: audio (and video) over its whole length, and words every 1.5 s."""
    rows = [{"type": "Audio", "filepath": path, "start": 0.0, "duration": duration, "offset": 0.0}]
    if video:
        rows.append({"type": "Video", "filepath": path, "start": 0.0, "duration": duration, "offset": 0.0})
    words = "the north wind and the sun were disputing which was the stronger".split()
    rows += [{"type": "Word", "filepath": None, "start": 1.5 * i + 0.25, "duration": 0.3, "offset": None,
              "text": w} for i, w in enumerate(words * 3) if 1.5 * i + 0.25 < duration]
    ev = pd.DataFrame(rows)
    ev["stop"] = ev["start"] + ev["duration"]
    return ev


class FakeTribeModel:
    def __init__(self, *, n_outputs: int = 20484, duration_trs: int = 10, batch_size: int = 2):
        self.data = SimpleNamespace(TR=1.0, duration_trs=duration_trs, neuro=SimpleNamespace(offset=5))
        self.remove_empty_segments = True
        self.batch_size = batch_size
        self._model = FusionModel(n_outputs, duration_trs).eval()
        self.calls: list[pd.DataFrame] = []

    def get_events_dataframe(self, video_path=None, audio_path=None) -> pd.DataFrame:
        import av

        path = video_path or audio_path
        with av.open(path) as c:
            duration = float(c.duration / 1e6)
        return events_for(path, duration, video=bool(video_path))

    def predict(self, events: pd.DataFrame, verbose: bool = True):
        self.calls.append(events)
        events = events.assign(stop=events["start"] + events["duration"])
        seg_s = self.data.duration_trs * self.data.TR
        t0, t1 = events["start"].min(), events["stop"].max()
        records = events.to_dict("records")
        segments = [Segment(s, seg_s, [e for e in records if e["start"] < s + seg_s and e["stop"] > s])
                    for s in np.arange(t0, t1, seg_s)]
        preds, kept_segments = [], []
        with torch.inference_mode():
            for b in range(0, len(segments), self.batch_size):
                segs = segments[b:b + self.batch_size]
                x = torch.from_numpy(np.stack([_features(events, s) for s in segs]))
                batch = Batch(segs, {"x": x})
                subs = [s.copy(offset=t, duration=self.data.TR)
                        for s in segs for t in np.arange(0, s.duration - 1e-2, self.data.TR)]
                keep = np.array([len(s.ns_events) > 0 or not self.remove_empty_segments for s in subs])
                y = self._model(batch).numpy()                         # (B, V, T')
                y = y.transpose(0, 2, 1).reshape(-1, y.shape[1])[keep]  # "b d t -> (b t) d"
                preds.append(y)
                kept_segments += [s for s, k in zip(subs, keep) if k]
        return np.concatenate(preds), kept_segments


def load(**kwargs) -> FakeTribeModel:
    return FakeTribeModel(**kwargs)
