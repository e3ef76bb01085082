"""How fast the student is: milliseconds of compute per second of video, on this device, named."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path


def device_name(device: str) -> str:
    """``NVIDIA H100 80GB HBM3`` / the CPU model with its core count."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


@dataclass(frozen=True)
class Speed:
    device: str
    student_ms_per_s: float      # the student alone, on cached features
    end_to_end_ms_per_s: float | None  # decode + backbones + student, on a media file
    seconds: float

    def line(self) -> str:
        e2e = f"; end to end {self.end_to_end_ms_per_s:.0f} ms" if self.end_to_end_ms_per_s is not None else ""
        return f"speed on {self.device}: student {self.student_ms_per_s:.2f} ms per second of video{e2e}"


def trs_in(seconds: float, tr_s: float = 1.49) -> int:
    """How many whole TRs ``[k TR, (k + 1) TR)`` fit in ``seconds`` of stimulus (100 in 150 s)."""
    return int(seconds / tr_s + 1e-9)


def measure(model, *, device: str = "cpu", seconds: float = 150.0, repeats: int = 5, media: Path | None = None) -> Speed:
    """Time the student on ``seconds`` of (random) features at 2 Hz, best of ``repeats`` after a warm-up;
    with ``media``, also features extraction + student on that file."""
    import torch

    from tinytribe.formats import MODALITIES
    from tinytribe.model.timegrid import TimeGrid

    model = model.to(device).eval()
    cfg = model.config
    steps = int(seconds * 2)
    feats = {m: torch.randn(1, steps, d, device=device) for m, d in zip(MODALITIES, cfg.input_dims)}
    available = torch.ones(1, 3, dtype=torch.bool, device=device)
    t0 = torch.zeros(1, dtype=torch.float64, device=device)
    grids = {"fmri": TimeGrid.regular(t0, trs_in(seconds), 1.49)}

    def run() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model(feats, available, t0, grids, subject=None)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run()
    student = min(run() for _ in range(repeats)) / seconds * 1e3
    e2e = None
    if media is not None:
        from tinytribe.features.decode import probe_media
        from tinytribe.features.extract import ExtractionConfig, FeatureExtractor

        extractor = FeatureExtractor(ExtractionConfig(device=device))
        duration = probe_media(media).duration_s
        extractor.extract(media)  # loads the backbones: not part of the per-second cost
        start = time.perf_counter()
        fc = extractor.extract(media)
        x = {m: torch.from_numpy(fc.model_input(m))[None].to(device) for m in MODALITIES}
        with torch.no_grad():
            model(x, available, t0, {"fmri": TimeGrid.regular(t0, trs_in(fc.n_steps / fc.rate_hz), 1.49)},
                  subject=None)
        e2e = (time.perf_counter() - start) / duration * 1e3
    return Speed(device_name(device), student, e2e, seconds)
