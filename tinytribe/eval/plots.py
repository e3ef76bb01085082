"""Figures the notebooks show. Each returns a matplotlib Figure and never calls ``show``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_probe_outputs(manifest_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The finished outputs of a ``probe`` job, stitched per source in time order.

    Returns:
        ``{source: {"times_s", "luminance", "audio_rms"}}``, each ``(n_steps,)``.
    """
    from tinytribe.formats import Manifest

    manifest_path = Path(manifest_path)
    m = Manifest.load(manifest_path)
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    for it in sorted(m.items, key=lambda i: (i.source, i.start_s)):
        if it.status == "done" and it.output:
            with np.load(manifest_path.parent / it.output) as z:
                parts.setdefault(it.source, []).append({k: z[k] for k in z.files if k != "meta"})
    return {src: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for src, ps in parts.items()}


def plot_media_probe(outputs: dict[str, dict[str, np.ndarray]]):
    """One row per media file: frame luminance and audio level over stimulus time."""
    import matplotlib.pyplot as plt

    n = max(len(outputs), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.9 * n), squeeze=False, sharex=True)
    for ax, (src, o) in zip(axes[:, 0], sorted(outputs.items())):
        ax.plot(o["times_s"], o["luminance"], color="tab:blue", label="frame luminance")
        ax.set_ylabel("luminance", color="tab:blue")
        ax.set_ylim(0, 1)
        ax2 = ax.twinx()
        ax2.plot(o["times_s"], o["audio_rms"], color="tab:orange", label="audio RMS")
        ax2.set_ylabel("audio RMS", color="tab:orange")
        ax.set_title(Path(src).name, fontsize=9, loc="left")
        if np.isnan(o["luminance"]).all():
            ax.text(0.5, 0.5, "no video", transform=ax.transAxes, ha="center", color="tab:blue")
        if np.isnan(o["audio_rms"]).all():
            ax.text(0.5, 0.3, "no audio", transform=ax.transAxes, ha="center", color="tab:orange")
    axes[-1, 0].set_xlabel("stimulus time (s)")
    fig.tight_layout()
    return fig
