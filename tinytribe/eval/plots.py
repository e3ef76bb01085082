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


def plot_features(fc, max_dims: int = 64):
    """Heat-maps of a feature cache: per modality, the first ``max_dims`` dimensions (z-scored) over
    time, with steps whose mask is 0 greyed out."""
    import matplotlib.pyplot as plt

    mods = list(fc.features)
    fig, axes = plt.subplots(len(mods), 1, figsize=(9, 1.6 * len(mods) + 0.6), squeeze=False, sharex=True)
    t = fc.times()
    for ax, m in zip(axes[:, 0], mods):
        x = fc.features[m][:, :max_dims].astype(np.float32)
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        x[~fc.masks[m]] = np.nan
        ax.imshow(x.T, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest",
                  extent=(t[0], t[-1] + 1 / fc.rate_hz, max_dims, 0))
        ax.set_facecolor("0.85")
        name = fc.backbones[m]["name"]
        ax.set_ylabel(f"{m}\n({name})", fontsize=8)
        ax.text(1.005, 0.5, f"{fc.masks[m].mean():.0%}\npresent", transform=ax.transAxes, fontsize=7, va="center")
        if m == "text" and fc.timing:  # the timing channels: when words arrive, and speech, over the heat-map
            step = t + 0.5 / fc.rate_hz
            ax.plot(step, max_dims * (1 - fc.timing["speech"]), color="k", lw=0.8, label="speech")
            onset = fc.timing["word_onsets"] > 0
            ax.vlines(step[onset], max_dims * 0.85, max_dims, color="tab:green", lw=1.0, label="word onsets")
            ax.legend(fontsize=6, loc="upper right", ncol=2)
    axes[0, 0].set_title(f"{fc.stimulus_id}: features at {fc.rate_hz:g} Hz (grey: no content; text: word onsets "
                         f"and speech)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("stimulus time (s)")
    fig.tight_layout()
    return fig


def plot_teacher(chunk, n_outputs: int = 200):
    """A stitched teacher cache: predictions of ``n_outputs`` evenly spaced outputs over BOLD time
    (z-scored per output), the mean response, and the norm of each fusion activation over stimulus time."""
    import matplotlib.pyplot as plt

    names = list(chunk.activations)
    fig, axes = plt.subplots(2 + bool(names), 1, figsize=(9, 5.2 if names else 3.8), squeeze=False, sharex=True)
    p = chunk.predictions.astype(np.float32)
    cols = np.linspace(0, p.shape[1] - 1, min(n_outputs, p.shape[1])).astype(int)
    z = (p[:, cols] - p[:, cols].mean(0)) / (p[:, cols].std(0) + 1e-6)
    t, w = chunk.bold_times_s, chunk.sample_width_s
    axes[0, 0].imshow(z.T, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest",
                      extent=(t[0], t[-1] + w, len(cols), 0))
    axes[0, 0].set_ylabel(f"{len(cols)} of {p.shape[1]}\noutputs", fontsize=8)
    axes[0, 0].set_title(f"{chunk.stimulus_id}: {chunk.teacher['id']} predictions in {chunk.space} "
                         f"(BOLD time = stimulus time + {chunk.hrf_offset_s:g} s)", fontsize=9, loc="left")
    axes[1, 0].plot(t + w / 2, p.mean(1), color="k")
    axes[1, 0].set_ylabel("mean\nprediction", fontsize=8)
    if names:
        for n in names:
            a = chunk.activations[n].astype(np.float32)
            axes[2, 0].plot(chunk.activation_times_s[n], np.linalg.norm(a, axis=1), label=n)
        axes[2, 0].set_ylabel("activation\nnorm", fontsize=8)
        axes[2, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    return fig


def plot_frames(media: list, n_frames: int = 5, size: tuple[int, int] = (160, 120)):
    """A row of frames (evenly spaced in time) per video file; audio-only files get a labelled empty row."""
    import matplotlib.pyplot as plt

    from tinytribe.features.decode import probe_media, sample_frames

    fig, axes = plt.subplots(len(media), n_frames, figsize=(1.7 * n_frames, 1.35 * len(media)), squeeze=False)
    for row, path in zip(axes, media):
        info = probe_media(path)
        times = (np.arange(n_frames) + 0.5) * info.duration_s / n_frames
        frames = dict(sample_frames(path, times, size)) if info.has_video else {}
        for i, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if i in frames:
                ax.imshow(frames[i])
            else:
                ax.set_facecolor("0.9")
                ax.text(0.5, 0.5, "no video", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            ax.set_title(f"{times[i]:.0f} s", fontsize=7)
        row[0].set_ylabel(Path(path).name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def plot_surface_maps(maps: dict[str, np.ndarray], *, cmap: str = "inferno", vmin: float | None = 0.0,
                      vmax: float | None = None, symmetric: bool = False):
    """Maps on the inflated fsaverage5 surface (nilearn, offline): one row per map, lateral and medial
    views of the left and right hemispheres, sulcal depth underneath. Maps are (20484,) fsaverage5
    values (use ``tinytribe.spaces.upsample_fsaverage4`` for fsaverage4); NaN is not drawn."""
    import matplotlib.pyplot as plt
    from nilearn import plotting
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    mesh = load_fsaverage("fsaverage5")
    sulc = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal").data
    views = [("left", "lateral"), ("left", "medial"), ("right", "lateral"), ("right", "medial")]
    fig, axes = plt.subplots(len(maps), 4, figsize=(10, 2.3 * len(maps)), squeeze=False,
                             subplot_kw={"projection": "3d"})
    for row, (name, values) in zip(axes, maps.items()):
        values = np.asarray(values, np.float64)
        if values.shape != (20484,):
            raise ValueError(f"map {name!r}: {values.shape}, expected (20484,) fsaverage5 values")
        top = vmax if vmax is not None else float(np.nanpercentile(np.abs(values), 99)) or 1.0
        for ax, (hemi, view) in zip(row, views):
            half = values[:10242] if hemi == "left" else values[10242:]
            plotting.plot_surf_stat_map(mesh["inflated"].parts[hemi], np.nan_to_num(half, nan=0.0), hemi=hemi,
                                        view=view, bg_map=sulc.parts[hemi], axes=ax, cmap=cmap, colorbar=False,
                                        vmin=-top if symmetric else vmin, vmax=top, threshold=1e-6, figure=fig)
        row[0].set_title(name, fontsize=9, loc="left")
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-top if symmetric else (vmin or 0.0), top))
        fig.colorbar(sm, ax=list(row), shrink=0.6, pad=0.01)
    return fig


def plot_roi_bars(rows: list[dict], models: list[str], title: str = ""):
    """Grouped bars per ROI: each model's mean r, and the noise ceiling as a grey bar behind them."""
    import matplotlib.pyplot as plt

    rois = [r["roi"] for r in rows]
    x = np.arange(len(rois))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(rois) + 2), 3.4))
    if rows and "ceiling" in rows[0]:
        ax.bar(x, [r["ceiling"] for r in rows], width=0.9, color="0.88", label="noise ceiling")
    width = 0.8 / max(len(models), 1)
    for k, name in enumerate(models):
        ax.bar(x - 0.4 + width * (k + 0.5), [r[name] for r in rows], width=width, label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(rois, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("Pearson r")
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(fontsize=7, ncol=len(models) + 1)
    fig.tight_layout()
    return fig


def plot_training(train_log: dict[str, np.ndarray], val_log: dict[str, np.ndarray] | None = None, *,
                  terms: list[str] | None = None, n_experts: int | None = None):
    """Loss curves and the validation monitors of a training run (the columns of ``train_log.csv`` and
    ``val_log.csv``, e.g. from ``tinytribe.train.loop.read_log``).

    Panels: each loss term over steps (smoothed over 10 steps, raw behind); validation r against the
    teacher and fMRI; the KD feature cosine (design target > 0.7); routing entropy as a fraction of
    ln E (healthy >= 0.7) and each expert's share in units of 1/E (healthy within the band 0.5-2).
    """
    import matplotlib.pyplot as plt

    terms = terms or [t for t in ("loss", "kd", "feature", "temporal", "multires", "aux", "fmri", "teacher", "pseudo",
                                  "masked", "contrastive", "next") if t in train_log]
    val = val_log if val_log and len(val_log.get("step", [])) else None
    fig, axes = plt.subplots(1, 4 if val else 1, figsize=(14 if val else 5, 3.2), squeeze=False)
    ax = axes[0, 0]
    steps = train_log["step"]
    for t in terms:
        y = train_log[t]
        k = min(10, len(y))
        smooth = np.convolve(y, np.ones(k) / k, mode="valid") if k else y
        line, = ax.plot(steps[k - 1:] if k else steps, smooth, label=t)
        ax.plot(steps, y, color=line.get_color(), alpha=0.2, lw=0.8)
    ax.set(xlabel="step", ylabel="loss term", title="training loss terms", yscale="log")
    ax.legend(fontsize=7, ncol=2)
    if val:
        ax = axes[0, 1]
        for key, label in (("r_teacher", "r vs teacher"), ("r_fmri", "r vs fMRI")):
            if key in val and np.isfinite(val[key]).any():
                ax.plot(val["step"], val[key], "o-", label=label)
        if "score" in val and not ax.lines:   # a phase without r (Phase 1): its validation score
            ax.plot(val["step"], val["score"], "o-", label="score")
        ax.set(xlabel="step", ylabel="mean r" if ax.lines and ax.lines[0].get_label() != "score" else "score",
               title="validation")
        ax.legend(fontsize=8)
        ax = axes[0, 2]
        if "feature_cos" in val and np.isfinite(val["feature_cos"]).any():
            ax.plot(val["step"], val["feature_cos"], "o-", color="tab:purple")
            ax.axhline(0.7, ls="--", color="grey", lw=1)
        ax.set(xlabel="step", ylabel="cosine", title="KD features vs teacher (target > 0.7)")
        ax = axes[0, 3]
        if "route_entropy_frac" in val:
            ax.plot(val["step"], val["route_entropy_frac"], "ko-", label="entropy / ln E")
            experts = sorted((k for k in val if k.startswith("share_e")), key=lambda k: int(k[7:]))
            for k in experts:   # each expert's share (mean over layers), in units of 1/E
                ax.plot(val["step"], val[k], "-", lw=1, alpha=0.8, label=f"expert {k[7:]} share x E")
            ax.plot(val["step"], val["min_share_e"], "v:", color="grey", label="smallest in any layer")
            ax.axhspan(0.5, 2.0, color="tab:green", alpha=0.08)
            ax.axhline(0.7, ls="--", color="grey", lw=1)
        ax.set(xlabel="step", title=f"routing{f' (E = {n_experts})' if n_experts else ''}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_subject_monitors(val_log: dict[str, np.ndarray]):
    """Phase 3's monitors over validations: r against fMRI per subject (``r_<subject>``), the
    teacher-consistency MSE (it should not climb: a climb means fitting fMRI noise), and each
    subject's FiLM gamma deviation from 1 (they should grow apart: all ~0 means FiLM is not
    learning subject differences)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.2))
    steps = val_log["step"]
    subjects = [k[2:] for k in val_log if k.startswith("r_") and k not in ("r_fmri", "r_teacher")]
    for s in subjects:
        axes[0].plot(steps, val_log[f"r_{s}"], "o-", ms=3, lw=1, label=s)
    if "r_fmri" in val_log:
        axes[0].plot(steps, val_log["r_fmri"], "k-", lw=2, label="mean")
    axes[0].set(xlabel="step", ylabel="mean r", title="validation r vs fMRI, per subject")
    axes[0].legend(fontsize=6, ncol=2)
    if "teacher_mse" in val_log:
        axes[1].plot(steps, val_log["teacher_mse"], "o-", color="tab:red")
    axes[1].set(xlabel="step", ylabel="MSE", title="teacher consistency (should not spike)")
    for k in (k for k in val_log if k.startswith("film_gamma_dev_") and k != "film_gamma_dev_max"):
        axes[2].plot(steps, val_log[k], "-", lw=1, label=k[len("film_gamma_dev_"):])
    axes[2].set(xlabel="step", ylabel="RMS(gamma - 1)", title="FiLM gamma per subject (should grow apart)")
    axes[2].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def plot_adaptation(rows: list[dict]):
    """A new subject's held-out r against the minutes of its fMRI the FiLM vectors were fitted on, beside
    the average-subject prediction (rows: ``minutes``, ``r_adapted``, ``r_average``, ``seconds``)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    m = [r["minutes"] for r in rows]
    ax.plot(m, [r["r_adapted"] for r in rows], "o-", label="own FiLM vectors")
    ax.axhline(rows[0]["r_average"], ls="--", color="grey", label="average subject")
    for r in rows:
        ax.annotate(f"{r['seconds']:.1f} s", (r["minutes"], r["r_adapted"]), fontsize=7, xytext=(3, -10),
                    textcoords="offset points")
    ax.set(xlabel="minutes of the subject's fMRI", ylabel="held-out mean r", title="a new subject")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_prediction_maps(pred, times_s: list[float] | None = None, n: int = 3):
    """Predicted activity on the inflated fsaverage5 surface at chosen BOLD times (default ``n`` evenly
    spaced), on one colour scale symmetric about 0. ``pred`` is a :class:`tinytribe.predict.Prediction`.
    fsaverage4 predictions are shown on fsaverage5 (each vertex its nearest fsaverage4 vertex: nilearn
    ships no fsaverage4 mesh) and parcel predictions painted on it; the title says which."""
    from tinytribe.spaces import has_surface, on_fsaverage5

    if not has_surface(pred.space):
        raise ValueError(f"a {pred.space} prediction has no surface to draw (plot its time courses instead)")
    N = pred.responses.shape[0]
    if times_s is None:
        idx = np.unique(np.linspace(0, N - 1, min(n, N) + 2)[1:-1].round().astype(int)) if N > 2 else np.arange(N)
    else:
        idx = [int(np.argmin(np.abs(pred.times_s - t))) for t in times_s]
    y = on_fsaverage5(pred.responses[idx], pred.space)
    top = float(np.nanpercentile(np.abs(y), 99)) or 1.0
    maps = {f"{pred.stimulus}, BOLD {pred.times_s[k]:.1f} s ({pred.subject} subject)": y[i] for i, k in enumerate(idx)}
    fig = plot_surface_maps(maps, cmap="RdBu_r", vmin=None, vmax=top, symmetric=True)
    note = {"fsaverage4": "fsaverage4 shown on fsaverage5: each vertex takes its nearest fsaverage4 vertex "
                          "(nilearn ships no fsaverage4 mesh)",
            "fsaverage5": "fsaverage5"}.get(pred.space, f"{pred.space} parcels painted on fsaverage5")
    fig.suptitle(f"predicted response (z) — {note}", fontsize=8, y=1.0)
    return fig


def plot_timecourses(pred, rois: dict[str, np.ndarray], *, measured: np.ndarray | None = None,
                     media: str | Path | None = None, n_frames: int = 6, max_words: int = 60):
    """Predicted (and measured) time courses of named ROIs under the stimulus: a row of frames, the word
    events, then one panel per ROI (the mean over its outputs).

    Args:
        pred: a :class:`tinytribe.predict.Prediction`.
        rois: name -> (V,) bool mask in ``pred.space``.
        measured: (N, V) measured responses on the same samples and space (e.g. a held-out run), drawn
            beside the prediction with their correlation.
        media: the clip, for its frames.
    """
    import matplotlib.pyplot as plt

    from tinytribe.eval.metrics import pearson_r
    from tinytribe.features.decode import probe_media, sample_frames

    V = pred.responses.shape[1]
    for name, m in rois.items():
        if np.asarray(m).shape != (V,):
            raise ValueError(f"ROI {name!r}: mask of shape {np.asarray(m).shape}, the prediction has {V} outputs "
                             f"({pred.space})")
    if measured is not None and measured.shape != pred.responses.shape:
        raise ValueError(f"measured responses are {measured.shape}, the prediction {pred.responses.shape}")
    t = pred.times_s + pred.tr_s / 2
    end = pred.times_s[-1] + pred.tr_s
    video = media is not None and probe_media(media).has_video
    fig = plt.figure(figsize=(10, 1.6 * len(rois) + (1.6 if video else 0) + 0.8))
    heights = ([1.3] if video else []) + [0.5] + [1.0] * len(rois)
    gs = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.35)
    row = 0
    if video:
        info = probe_media(media)
        ft = (np.arange(n_frames) + 0.5) * min(info.duration_s, end) / n_frames
        frames = dict(sample_frames(media, ft, (160, round(160 * info.height / info.width))))
        sub = gs[0].subgridspec(1, n_frames, wspace=0.05)
        for i in range(n_frames):
            ax = fig.add_subplot(sub[0, i])
            ax.set_axis_off()
            if i in frames:
                ax.imshow(frames[i])
            ax.set_title(f"{ft[i]:.0f} s", fontsize=7)
        row = 1
    ax_w = fig.add_subplot(gs[row])
    words = [w for w in pred.words if w.onset < end]
    ax_w.vlines([w.onset for w in words], 0, 1, color="0.3", lw=0.6)
    step = max(1, len(words) // max_words)
    for w in words[::step]:
        ax_w.text(w.onset, 1.05, w.word, rotation=60, fontsize=6, ha="left", va="bottom")
    ax_w.set_xlim(0, end)
    ax_w.set_yticks([])
    ax_w.set_ylabel("words", fontsize=7, rotation=0, ha="right", va="center")
    ax_w.tick_params(labelbottom=False)
    if not words:
        ax_w.text(0.5, 0.5, "no words", transform=ax_w.transAxes, ha="center", va="center", fontsize=7)
    for k, (name, mask) in enumerate(rois.items()):
        ax = fig.add_subplot(gs[row + 1 + k], sharex=ax_w)
        m = np.asarray(mask, bool)
        p = pred.responses[:, m].mean(axis=1)
        label = f"{name} ({int(m.sum())} outputs)"
        if measured is not None:   # both z-scored over the clip: r does not see scale, nor should the eye
            y = np.nanmean(measured[:, m], axis=1)
            ok = np.isfinite(y)
            label += f", r = {float(pearson_r(p[ok], y[ok])):.2f}"
            p, y = _z(p), _z(y)
            ax.plot(t, y, color="k", lw=0.9, alpha=0.8, label="measured")
        ax.plot(t, p, color="C0", lw=1.2, label="predicted")
        ax.axhline(0, color="0.7", lw=0.5)
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if k < len(rois) - 1:
            ax.tick_params(labelbottom=False)
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel(f"BOLD time (s); samples every {pred.tr_s:g} s (plotted at their centres); subject "
                  f"{pred.subject}, {pred.space}" + ("; z-scored over the clip" if measured is not None else ""),
                  fontsize=8)
    return fig


def _z(x: np.ndarray) -> np.ndarray:
    sd = np.nanstd(x)
    return (x - np.nanmean(x)) / (sd if sd > 0 else 1.0)
