"""Predicted activity as a movie beside its clip: one frame per TR, in bounded time per frame.

nilearn draws one surface view in about a second, far too slow for a frame per TR. Here the inflated
fsaverage5 surface is rasterised once per view (each pixel takes the nearest visible vertex of the
orthographic projection, depth-tested), so a frame is one indexing of the values plus a colour map:
milliseconds. The pictures match nilearn's lateral views at fsaverage5's vertex spacing.

    write_movie(pred, "clip.mp4", "runs/predict/clip_brain.gif")
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIEWS = (("left", "lateral"), ("right", "lateral"), ("left", "medial"), ("right", "medial"))


@dataclass(frozen=True)
class SurfaceView:
    """A rasterised view: ``index`` (H, W) the fsaverage5 vertex (0..20483) each pixel shows, -1 outside
    the brain; ``shade`` (H, W) sulcal shading in [0, 1]."""

    index: np.ndarray
    shade: np.ndarray


@functools.cache
def surface_view(hemi: str, view: str, height: int = 150) -> SurfaceView:
    """Rasterise the inflated fsaverage5 ``hemi`` seen from ``view`` (``lateral`` or ``medial``)."""
    from nilearn.datasets import load_fsaverage, load_fsaverage_data
    from scipy import ndimage

    mesh = load_fsaverage("fsaverage5")["inflated"].parts[hemi]
    xyz = np.asarray(mesh.coordinates, np.float64)
    sulc = np.asarray(load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal").data.parts[hemi])
    # look along x: lateral of the left hemisphere from -x, medial from +x (the mirror for the right)
    from_minus_x = (hemi == "left") == (view == "lateral")
    depth = xyz[:, 0] if from_minus_x else -xyz[:, 0]          # small = near the camera
    u = -xyz[:, 1] if from_minus_x else xyz[:, 1]               # anterior to the left (lateral left view)
    v = xyz[:, 2]
    scale = (height - 4) / np.ptp(v)
    width = int(np.ceil(np.ptp(u) * scale)) + 4
    px = np.clip(((u - u.min()) * scale).astype(int) + 2, 0, width - 1)
    py = np.clip(((v.max() - v) * scale).astype(int) + 2, 0, height - 1)
    index = np.full((height, width), -1, np.int64)
    order = np.argsort(-depth)                  # far first: near vertices overwrite them
    index[py[order], px[order]] = order
    inside = ndimage.binary_fill_holes(ndimage.binary_closing(index >= 0, iterations=2))
    _, (iy, ix) = ndimage.distance_transform_edt(index < 0, return_indices=True)
    index = np.where(inside, index[iy, ix], -1)
    offset = 0 if hemi == "left" else 10242
    shade = np.where(index >= 0, 0.55 + 0.25 * (sulc[np.maximum(index, 0)] > 0), 1.0)
    return SurfaceView(np.where(index >= 0, index + offset, -1), shade)


def render(values: np.ndarray, *, vmax: float, views=VIEWS[:2], cmap: str = "RdBu_r", height: int = 150
           ) -> np.ndarray:
    """(H, W, 3) uint8: fsaverage5 ``values`` (20484,) on the chosen views side by side, on sulcal shading
    (|value| below 5 % of ``vmax`` shows the shading only; NaN too)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    panels = []
    for hemi, view in views:
        sv = surface_view(hemi, view, height)
        x = np.where(sv.index >= 0, values[np.maximum(sv.index, 0)], np.nan)
        rgb = cm(np.clip((np.nan_to_num(x) / vmax + 1) / 2, 0, 1))[..., :3]
        weak = ~np.isfinite(x) | (np.abs(np.nan_to_num(x)) < 0.05 * vmax)
        img = np.where(weak[..., None], sv.shade[..., None], rgb)
        img[sv.index < 0] = 1.0
        panels.append(img)
    return (np.concatenate(panels, axis=1) * 255).astype(np.uint8)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(img)
    ImageDraw.Draw(im).text((4, 2), text, fill=(0, 0, 0))
    return np.asarray(im)


def movie_frames(pred, media: str | Path | None = None, *, height: int = 150, vmax: float | None = None):
    """Yield one (H, W, 3) uint8 frame per TR: the clip's frame at the TR's time (when ``media`` has
    video) beside the predicted activity on lateral views of both hemispheres."""
    from tinytribe.features.decode import probe_media, sample_frames
    from tinytribe.spaces import has_surface, on_fsaverage5

    if not has_surface(pred.space):
        raise ValueError(f"a {pred.space} prediction has no surface to show")
    y = on_fsaverage5(pred.responses, pred.space)           # (N, 20484)
    vmax = vmax or float(np.nanpercentile(np.abs(y), 99)) or 1.0
    frames = {}
    if media is not None and probe_media(media).has_video:
        info = probe_media(media)
        w = max(2, round(info.width * height / info.height))
        times = np.minimum(pred.times_s + pred.tr_s / 2, info.duration_s - 1e-3)
        frames = dict(sample_frames(media, times, (w, height)))
    shown = {"fsaverage5": "fsaverage5", "fsaverage4": "fsaverage4 on fsaverage5 (nearest vertex)"}.get(
        pred.space, f"{pred.space} painted on fsaverage5")
    for k in range(y.shape[0]):
        brain = _label(render(y[k], vmax=vmax, height=height), f"BOLD {pred.times_s[k]:.1f} s  ({shown})")
        if k in frames:
            clip = np.asarray(frames[k], np.uint8)[:height]
            brain = np.concatenate([clip, np.full((height, 6, 3), 255, np.uint8), brain], axis=1)
        yield brain


def write_movie(pred, media: str | Path | None, path: str | Path, *, height: int = 150, fps: float = 10.0) -> Path:
    """The movie of ``pred`` beside ``media`` as ``.gif`` (Pillow, each frame one TR long) or ``.mp4``
    (H.264 through PyAV at ``fps``: output frame j shows the TR under time j / fps, so the movie keeps
    the stimulus clock). Atomic."""
    from tinytribe._io import atomic_write

    path = Path(path)
    frames = list(movie_frames(pred, media, height=height))
    if path.suffix.lower() == ".gif":
        from PIL import Image

        ims = [Image.fromarray(f) for f in frames]
        return atomic_write(path, lambda f: ims[0].save(f, format="GIF", save_all=True, append_images=ims[1:],
                                                        duration=int(round(pred.tr_s * 1000)), loop=0))
    if path.suffix.lower() == ".mp4":
        import av

        def write(f) -> None:
            with av.open(f, "w", format="mp4") as out:
                h, w = frames[0].shape[:2]
                stream = out.add_stream("libx264", rate=int(fps))
                stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
                video = [av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h - h % 2, :w - w % 2]), format="rgb24")
                         for img in frames]
                n_out = int(round(len(frames) * pred.tr_s * fps))
                for j in range(n_out):
                    for packet in stream.encode(video[min(int(j / fps / pred.tr_s), len(video) - 1)]):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)

        return atomic_write(path, write)
    raise ValueError(f"{path}: a movie is .gif or .mp4")
