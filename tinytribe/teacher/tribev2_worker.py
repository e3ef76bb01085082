"""TRIBE v2 inside its own virtual environment: the process the notebook talks to through files.

TRIBE v2 pins ``torch<2.7``, ``numpy==2.2.6`` and ``x_transformers==1.27.20``; installed into a Kaggle or
Colab kernel it would replace their torch. So it lives in a separate virtual environment
(:func:`tinytribe.teacher.tribev2.ensure_env`) and this file runs there, by path, with that
environment's Python. It imports nothing from tinytribe -- only the standard library, numpy,
pandas, torch and (when asked to load) tribev2.

Protocol: one JSON request per line on stdin, one JSON reply per line on the original stdout
(everything the libraries print goes to stderr). Arrays travel in ``.npz`` files written
atomically where the request says.

    {"op": "load", "factory": "tribev2.demo_utils:TribeModel.from_pretrained", "kwargs": {...}}
    {"op": "predict", "media": "/abs/clip.mp4", "start_s": 150.0, "end_s": 300.0, "out": "/abs/x.npz"}
    {"op": "quit"}
    reply: {"ok": true, ...} or {"ok": false, "error": "one line"}

How a window is predicted: the stimulus's events (audio extraction + WhisperX words, made once per
file and cached) are cut to the teacher's own 100 s segment grid around the window -- audio and
video events clipped (their file ``offset`` moved with their start), words kept when they start
inside -- so every row is computed in the same segment, with the same context, as in a run over
the whole file. ``predict`` runs with ``remove_empty_segments=False`` (else silent stretches would
lose rows); rows and activations outside the window are dropped.

Fusion activations are the residual stream after transformer blocks 4 and 6 of the x-transformers
``Encoder`` (``model._model.encoder``): its ``layers`` list alternates attention and feed-forward
sub-layers, each ``[norms, block, residual]``, so block ``k`` ends at ``layers[2k - 1]`` and the stream
after it is the output of that sub-layer's ``Residual`` module. (``encoder.layers[3]``, as in the
design's sketch, is the feed-forward half of block 2.)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

SPLITTABLE = ("Audio", "Video")
DEFAULT_BLOCKS = {"fusion_l4": 4, "fusion_l6": 6}


def aligned_window(start_s: float, end_s: float, origin_s: float, segment_s: float) -> tuple[float, float]:
    """The smallest ``[W, E)`` on the teacher's segment grid ``origin + k * segment_s`` holding ``[start_s, end_s)``."""
    k0 = math.floor((start_s - origin_s) / segment_s + 1e-9)
    k1 = math.ceil((end_s - origin_s) / segment_s - 1e-9)
    return origin_s + k0 * segment_s, origin_s + max(k1, k0 + 1) * segment_s


def clip_events(events, start_s: float, stop_s: float):
    """The events a window ``[start_s, stop_s)`` needs, cut to it.

    Audio and video events overlapping the window are clipped to it, moving their ``offset`` into the
    file with their start; other events (words, text) are kept when they start inside the window.
    The result starts exactly at ``start_s`` when a media event covers it, so TRIBE's segments start
    there too.
    """
    ev = events.copy()
    stop = ev["start"] + ev["duration"]
    media = ev["type"].isin(SPLITTABLE)
    keep = np.where(media, (stop > start_s) & (ev["start"] < stop_s), (ev["start"] >= start_s) & (ev["start"] < stop_s))
    ev, stop, media = ev[keep].copy(), stop[keep], media[keep]
    new_start = np.where(media, np.maximum(ev["start"], start_s), ev["start"])
    new_stop = np.where(media, np.minimum(stop, stop_s), stop)
    if "offset" in ev.columns:
        ev["offset"] = np.where(media, ev["offset"].fillna(0.0) + (new_start - ev["start"]), ev["offset"])
    ev["start"] = new_start
    ev["duration"] = new_stop - new_start
    if "stop" in ev.columns:
        ev["stop"] = new_stop
    return ev.reset_index(drop=True)


def residual_stream_modules(encoder, blocks: dict[str, int]) -> dict[str, Any]:
    """The ``Residual`` module that ends each requested transformer block (1-based) of an
    x-transformers ``Encoder``."""
    types = list(getattr(encoder, "layer_types", ()))
    depth = types.count("a")
    out = {}
    for name, k in blocks.items():
        i = 2 * k - 1
        if not 1 <= k <= depth or types[i - 1:i + 1] != ["a", "f"]:
            raise ValueError(f"{name}: block {k} is not an attention + feed-forward block of this encoder "
                             f"(layer types {''.join(types)})")
        out[name] = encoder.layers[i][2]
    return out


class Recorder:
    """Hooks that record each forward call's segments and the residual stream after chosen blocks."""

    def __init__(self, model, blocks: dict[str, int]):
        self.model, self.blocks = model, blocks
        self.segments: list[list[tuple[float, float]]] = []
        self.outputs: dict[str, list[np.ndarray]] = {n: [] for n in blocks}
        self._handles: list[Any] = []

    def __enter__(self) -> "Recorder":
        def before(_module, args):
            self.segments.append([(float(s.start), float(s.duration)) for s in args[0].segments])

        self._handles.append(self.model.register_forward_pre_hook(before))
        for name, module in residual_stream_modules(self.model.encoder, self.blocks).items():
            def after(_module, _args, output, name=name):
                self.outputs[name].append(output.detach().float().cpu().numpy())
            self._handles.append(module.register_forward_hook(after))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def activations(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per name: (m, D) rows and the stimulus time each stands for, over every call so far."""
        acts, times = {}, {}
        for name, outs in self.outputs.items():
            rows, ts = [], []
            for segs, x in zip(self.segments, outs):            # x: (B, T, D), one row per segment
                for (start, duration), xb in zip(segs, x):
                    rows.append(xb)
                    ts.append(start + np.arange(xb.shape[0]) * duration / xb.shape[0])
            acts[name] = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
            times[name] = np.concatenate(ts) if ts else np.zeros(0)
        return acts, times


def predict_window(model, events, start_s: float, end_s: float, blocks: dict[str, int] | None = None) -> dict:
    """One window of one stimulus through a loaded TribeModel.

    Returns:
        ``predictions`` (n, V), ``times_s`` (n,) stimulus start of each row, ``act__<name>`` and
        ``act_times__<name>`` per block, and ``events`` (the records given to the model).
    """
    blocks = blocks or DEFAULT_BLOCKS
    tr = float(model.data.TR)
    segment_s = float(model.data.duration_trs) * tr
    origin = float(events["start"].min())
    w0, w1 = aligned_window(start_s, end_s, origin, segment_s)
    window = clip_events(events, w0, w1)
    if window.empty:
        raise ValueError(f"no events in [{w0:g}, {w1:g}) s")
    model.remove_empty_segments = False  # every TR gets its row, silent or not
    with Recorder(model._model, blocks) as rec:
        preds, segments = model.predict(window, verbose=False)
    times = np.array([float(s.start) for s in segments])
    keep = (times >= start_s - 1e-6) & (times < end_s - 1e-6)
    out = {"predictions": np.asarray(preds, dtype=np.float32)[keep], "times_s": times[keep]}
    acts, act_times = rec.activations()
    for name in blocks:
        k = (act_times[name] >= start_s - 1e-6) & (act_times[name] < end_s - 1e-6)
        out[f"act__{name}"] = acts[name][k].astype(np.float32)
        out[f"act_times__{name}"] = act_times[name][k]
    out["events"] = json.loads(window.to_json(orient="records", default_handler=str))
    return out


def _resolve(spec: str):
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checkpoint_file(checkpoint: str, name: str = "best.ckpt") -> str | None:
    """The local path of the checkpoint file (downloaded into the HF cache when given a hub id)."""
    if Path(checkpoint, name).is_file():
        return str(Path(checkpoint, name))
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(checkpoint, name)
    except Exception:
        return None


def _write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Worker:
    """The loaded model and the per-file events cache."""

    def __init__(self):
        self.model = None
        self.events: dict[tuple[str, int, float], Any] = {}
        self.events_dir: Path | None = None

    def load(self, req: dict) -> dict:
        factory = _resolve(req.get("factory", "tribev2.demo_utils:TribeModel.from_pretrained"))
        kwargs = req.get("kwargs", {})
        self.model = factory(**kwargs)
        self.events_dir = Path(req["events_dir"]) if req.get("events_dir") else None
        encoder = self.model._model.encoder
        ckpt = _checkpoint_file(str(kwargs.get("checkpoint_dir", ""))) if kwargs.get("checkpoint_dir") else None
        return {"rate_hz": 1.0 / float(self.model.data.TR),
                "hrf_offset_s": float(getattr(self.model.data.neuro, "offset", 0.0)),
                "segment_s": float(self.model.data.duration_trs) * float(self.model.data.TR),
                "activation_dim": int(encoder.dim),
                "checkpoint_sha256": _sha256(ckpt) if ckpt else None}

    def stimulus_events(self, media: str):
        """TRIBE's events for a whole file, made once (ASR is the slow part) and cached on disk."""
        st = os.stat(media)
        key = (media, st.st_size, st.st_mtime)
        if key not in self.events:
            import pandas as pd

            cached = None
            if self.events_dir is not None:
                digest = hashlib.sha256(f"{media}|{st.st_size}|{st.st_mtime}".encode()).hexdigest()[:16]
                cached = self.events_dir / f"{Path(media).stem}-{digest}.json"
            if cached is not None and cached.is_file():
                ev = pd.read_json(cached, orient="records")
            else:
                kind = "video_path" if Path(media).suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".webm") \
                    else "audio_path"
                ev = self.model.get_events_dataframe(**{kind: media})
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
                    tmp.write_text(ev.to_json(orient="records", default_handler=str))
                    os.replace(tmp, cached)
            self.events[key] = ev
        return self.events[key]

    def predict(self, req: dict) -> dict:
        if self.model is None:
            raise RuntimeError("predict before load")
        if not Path(req["media"]).is_file():
            raise FileNotFoundError(f"{req['media']}: media file not found")
        res = predict_window(self.model, self.stimulus_events(req["media"]), req["start_s"], req["end_s"])
        events = res.pop("events")
        _write_npz(req["out"], res)
        Path(req["out"] + ".events.json").write_text(json.dumps(events))
        return {"rows": int(res["predictions"].shape[0])}


def serve(requests, replies) -> None:
    """Answer requests (an iterable of JSON lines) until ``quit`` or end of input."""
    worker = Worker()
    for line in requests:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "quit":
                break
            if op not in ("load", "predict"):
                raise ValueError(f"unknown op {op!r}")
            reply = {"ok": True, **getattr(worker, op)(req)}
        except Exception as e:  # one line back to the notebook, the traceback to stderr
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)                         # ... and every print and progress bar goes to stderr
    sys.stdout = sys.stderr
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
