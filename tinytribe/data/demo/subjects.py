"""Simulated subjects on fsaverage5: a known answer for every path of the pipeline.

Responses are driven by the *cached backbone features* of each stimulus -- the same inputs the
student sees -- through region-specific, nonlinear functions:

| region (atlas) | driver |
|---|---|
| early visual: HCP-MMP1 V1, V2, V3; V4 | video content (3 random directions of the EfficientNet features) and frame-to-frame change |
| MT | frame-to-frame change (motion, cuts) |
| auditory: A1, LBelt, MBelt, PBelt, RI | audio (2 directions of the Whisper encoder features, rectified) |
| language: 44, 45, STSda/dp/va/vp, TPOJ1 | text with ~6 s of context; left-lateralised (right hemisphere at 35 %) |
| default mode: Yeo-7 network 7 (the rest) | slow narrative context (~30 s) of text and audio |
| mixed: 6 % of the remaining cortex | two of the drivers above |
| everything else, and the medial wall | nothing (noise only; the medial wall is zero) |

For subject ``s`` and region ``r`` the signal is ``softplus(g_sr * (sum_j w_srj d_j(t) - c_sr))``: each
subject reweights the drivers and the nonlinearity per region (what a per-subject FiLM can express,
and what per-run z-scoring does not erase). It is convolved with a region-specific double-gamma HRF
(peak 4-7 s), scaled per vertex by a smooth positive map, sampled per TR (mean over
``[tau, tau + TR)``), and added to temporally autocorrelated (AR(1)), spatially smooth noise at a
per-vertex SNR. A linear model on the features cannot be perfect: the drivers are nonlinear
(tanh, rectification, norms of differences, leaky integration) and so is the response.

The noise ceiling (one convention for the project, ``tinytribe.eval.ceiling``): the expected Pearson
r between a perfect model and one measured run, ``sqrt(var_signal / (var_signal + var_noise))``,
written per subject and vertex from the variances of the repeated (test) stimuli.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from tinytribe.formats import FeatureCache

RATE_HZ = 2.0
REGIONS = {  # name -> (atlas, atlas labels (without hemisphere prefix), driver weights)
    "early_visual": ("hcp-mmp1", ("V1", "V2", "V3"), {"content": 1.0, "motion": 0.8}),
    "V4": ("hcp-mmp1", ("V4",), {"content": 1.0, "motion": 0.2}),
    "MT": ("hcp-mmp1", ("MT", "MST"), {"motion": 1.0, "content": 0.2}),
    "auditory": ("hcp-mmp1", ("A1", "LBelt", "MBelt", "PBelt", "RI"), {"audio": 1.0}),
    "language": ("hcp-mmp1", ("44", "45", "STSda", "STSdp", "STSva", "STSvp", "TPOJ1"), {"text": 1.0, "audio": 0.3}),
    "default_mode": ("yeo-7", ("7Networks_7",), {"narrative": 1.0}),
}
DRIVERS = ("content", "motion", "audio", "text", "narrative")


@dataclass
class SimulationConfig:
    """What the simulator makes (saved beside the study as ``generator.json``)."""

    n_subjects: int = 4
    tr_s: float = 1.49
    tail_s: float = 8.0              # BOLD recorded after the stimulus ends
    snr_range: tuple[float, float] = (0.4, 2.5)   # signal / noise variance of responsive vertices
    noise_ar: float = 0.4            # AR(1) coefficient from one TR to the next
    noise_smoothing: int = 4         # neighbour-averaging passes over the mesh
    mixed_fraction: float = 0.06
    right_language_gain: float = 0.35
    subject_spread: float = 0.35     # log-normal spread of subject-specific driver weights
    seed: int = 0


def _smooth_on_mesh(x: np.ndarray, adjacency, n_iter: int) -> np.ndarray:
    """``n_iter`` passes of averaging each vertex with its neighbours; x is (V,) or (V, k)."""
    for _ in range(n_iter):
        x = adjacency @ x
    return x


@functools.cache
def mesh_adjacency():
    """Row-normalised (self + neighbours) averaging operator on fsaverage5, both hemispheres: (20484, 20484)."""
    import scipy.sparse as sp
    from nilearn.datasets import load_fsaverage

    mesh = load_fsaverage("fsaverage5")["pial"]
    blocks = []
    for hemi in ("left", "right"):
        faces = np.asarray(mesh.parts[hemi].faces)
        n = np.asarray(mesh.parts[hemi].coordinates).shape[0]
        i = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], np.arange(n)])
        j = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], np.arange(n)])
        a = sp.coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
        a = ((a + a.T) > 0).astype(np.float64)
        blocks.append(sp.diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a)
    return sp.block_diag(blocks).tocsr()


def double_gamma(peak_s: float, rate_hz: float = RATE_HZ, length_s: float = 24.0) -> np.ndarray:
    """A canonical-shaped HRF peaking at ``peak_s``, sampled at ``rate_hz``, summing to 1."""
    from scipy.stats import gamma

    t = np.arange(0.0, length_s, 1.0 / rate_hz) + 0.5 / rate_hz
    h = gamma.pdf(t, peak_s + 1.0) - gamma.pdf(t, peak_s + 11.0) / 6.0
    return h / h.sum()


def _ema(x: np.ndarray, tau_s: float) -> np.ndarray:
    """Leaky integration along time (axis 0) with time constant ``tau_s``."""
    a = math.exp(-1.0 / (tau_s * RATE_HZ))
    out = np.empty_like(x)
    acc = np.zeros(x.shape[1:], dtype=x.dtype)
    for i in range(x.shape[0]):
        acc = a * acc + (1 - a) * x[i]
        out[i] = acc
    return out


@dataclass
class Generator:
    """Everything random about the demo study, drawn once from the seed and saved."""

    config: SimulationConfig
    regions: np.ndarray               # (20484,) int: 0 none, k = REGION_NAMES[k - 1], -1 mixed
    mixed_drivers: np.ndarray         # (20484, 2) int driver indices for mixed vertices (else -1)
    amplitude: np.ndarray             # (20484,) vertex scale (0 where unresponsive)
    snr: np.ndarray                   # (20484,) signal/noise variance of each vertex
    medial_wall: np.ndarray           # (20484,) bool
    hrf_peak_s: dict[str, float]
    subject_weights: np.ndarray       # (n_subjects, n_regions + 1, n_drivers); last region row: mixed
    subject_gain: np.ndarray          # (n_subjects, n_regions + 1)
    subject_offset: np.ndarray        # (n_subjects, n_regions + 1)
    subject_snr: np.ndarray           # (n_subjects,) each subject's SNR relative to ``snr``
    directions: dict[str, np.ndarray]  # random feature directions per driver
    norms: dict[str, list[float]] = field(default_factory=dict)  # driver (mean, std) over the study

    @property
    def region_names(self) -> list[str]:
        return list(REGIONS)


def draw_generator(config: SimulationConfig, dims: dict[str, int]) -> Generator:
    """Draw the regions, vertex maps, SNRs, HRFs and subject differences from ``config.seed``."""
    from tinytribe.spaces import load_atlas

    rng = np.random.default_rng(config.seed)
    adjacency = mesh_adjacency()
    schaefer, _ = load_atlas("schaefer-400")
    medial = schaefer == 0
    regions = np.zeros(20484, np.int64)
    for k, (name, (atlas, labels, _)) in enumerate(REGIONS.items(), start=1):
        lab, names = load_atlas(atlas)
        wanted = [i + 1 for i, n in enumerate(names) if n.removeprefix("L_").removeprefix("R_").removesuffix("_ROI")
                  in labels]
        inside = np.isin(lab, wanted) & (regions == 0) & ~medial
        regions[inside] = k
    free = np.flatnonzero((regions == 0) & ~medial)
    seeds = rng.choice(free, size=int(config.mixed_fraction * free.size / 8), replace=False)
    spread = np.zeros(20484)
    spread[seeds] = 1.0
    spread = _smooth_on_mesh(spread, adjacency, 2)
    mixed = (spread > 0) & (regions == 0) & ~medial
    regions[mixed] = -1
    mixed_drivers = np.full((20484, 2), -1, np.int64)
    mixed_drivers[mixed] = np.stack([rng.choice(len(DRIVERS), 2, replace=False) for _ in range(mixed.sum())])

    field_ = _smooth_on_mesh(rng.standard_normal(20484), adjacency, 8)
    field_ = (field_ - field_.mean()) / field_.std()
    responsive = regions != 0
    amplitude = np.where(responsive, np.exp(0.35 * field_), 0.0)
    snr_field = _smooth_on_mesh(rng.uniform(0, 1, 20484), adjacency, 6)
    snr_field = (snr_field - snr_field.min()) / (np.ptp(snr_field) + 1e-12)
    lo, hi = config.snr_range
    snr = np.where(responsive, lo * (hi / lo) ** snr_field, 0.0)

    n_r = len(REGIONS) + 1
    base = np.zeros((n_r, len(DRIVERS)))
    for k, (_, _, weights) in enumerate(REGIONS.values()):
        for d, w in weights.items():
            base[k, DRIVERS.index(d)] = w
    base[-1] = 1.0  # mixed vertices: the two chosen drivers are picked per vertex
    subj_w = base[None] * np.exp(config.subject_spread * rng.standard_normal((config.n_subjects, n_r, len(DRIVERS))))
    gain = np.exp(0.25 * rng.standard_normal((config.n_subjects, n_r))) * 1.5
    offset = 0.3 * rng.standard_normal((config.n_subjects, n_r))
    hrf_peak = {name: float(rng.uniform(4.0, 7.0)) for name in [*REGIONS, "mixed"]}
    subject_snr = np.exp(0.3 * rng.standard_normal(config.n_subjects))

    def unit(n: int, k: int) -> np.ndarray:
        d = rng.standard_normal((n, k))
        return d / np.linalg.norm(d, axis=0)

    directions = {"content": unit(dims["video"], 3), "audio": unit(dims["audio"], 2), "text": unit(dims["text"], 2),
                  "narrative": unit(dims["text"] + dims["audio"], 1)}
    return Generator(config, regions, mixed_drivers, amplitude, snr, medial, hrf_peak, subj_w, gain, offset,
                     subject_snr, directions)


def raw_drivers(g: Generator, fc: FeatureCache, extra_steps: int = 0) -> np.ndarray:
    """(T + extra_steps, n_drivers) nonlinear drivers at 2 Hz, before normalisation; zero where the
    modality is absent and during the ``extra_steps`` after the stimulus."""
    T = fc.n_steps
    out = np.zeros((T + extra_steps, len(DRIVERS)))

    def feats(m: str) -> tuple[np.ndarray, np.ndarray]:
        x = fc.features[m].astype(np.float64)
        return x, fc.masks[m]

    v, mv = feats("video")
    vz = v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6)
    out[:T, 0] = np.where(mv, np.tanh(3.0 * vz @ g.directions["content"]).sum(1), 0.0)
    change = np.r_[0.0, np.linalg.norm(np.diff(vz, axis=0), axis=1)]
    out[:T, 1] = np.where(mv & np.r_[False, mv[:-1]], np.sqrt(change), 0.0)
    a, ma = feats("audio")
    az = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-6)
    out[:T, 2] = np.where(ma, np.maximum(az @ g.directions["audio"] * 4.0, 0.0).sum(1), 0.0)
    t, mt = feats("text")
    tz = t / (np.linalg.norm(t, axis=1, keepdims=True) + 1e-6)
    text = np.where(mt[:, None], np.tanh(4.0 * tz @ g.directions["text"]), 0.0)
    out[:T, 3] = _ema(text, 3.0).sum(1) ** 2
    story = np.where((mt | ma)[:, None], np.concatenate([tz, az], axis=1) @ g.directions["narrative"], 0.0)
    out[:T, 4] = np.abs(_ema(story, 15.0))[:, 0]
    return out


def normalised_drivers(g: Generator, fc: FeatureCache, extra_steps: int = 0) -> np.ndarray:
    d = raw_drivers(g, fc, extra_steps)
    mean = np.array([g.norms[k][0] for k in DRIVERS])
    std = np.array([g.norms[k][1] for k in DRIVERS])
    return (d - mean) / std


def fit_norms(g: Generator, caches: list[FeatureCache]) -> None:
    """Driver means and standard deviations over all stimuli (stored; later calls reuse them)."""
    d = np.concatenate([raw_drivers(g, fc) for fc in caches])
    g.norms = {k: [float(d[:, i].mean()), float(d[:, i].std() + 1e-6)] for i, k in enumerate(DRIVERS)}


def response(g: Generator, fc: FeatureCache, subject: int | None, tail_s: float | None = None) -> np.ndarray:
    """Noiseless response at 2 Hz, (T + tail steps, 20484), for a subject (None: the average subject,
    with the mean of the subjects' weights, gains and offsets)."""
    tail = int(round((g.config.tail_s if tail_s is None else tail_s) * RATE_HZ))
    d = normalised_drivers(g, fc, tail)                                    # (T', n_drivers)
    if subject is None:
        w, gain, off = g.subject_weights.mean(0), g.subject_gain.mean(0), g.subject_offset.mean(0)
    else:
        w, gain, off = g.subject_weights[subject], g.subject_gain[subject], g.subject_offset[subject]
    n_r = len(REGIONS)
    y = np.zeros((d.shape[0], 20484))
    for k, name in enumerate(REGIONS):
        sig = np.logaddexp(0.0, gain[k] * (d @ w[k] - off[k]))             # softplus, (T',)
        bold = np.convolve(sig, double_gamma(g.hrf_peak_s[name]))[: d.shape[0]]
        idx = g.regions == k + 1
        y[:, idx] = bold[:, None] * g.amplitude[idx][None, :]
        if name == "language":
            right = idx & (np.arange(20484) >= 10242)
            y[:, right] *= g.config.right_language_gain
    mixed = np.flatnonzero(g.regions == -1)
    if mixed.size:
        h = double_gamma(g.hrf_peak_s["mixed"])
        for pair in np.unique(g.mixed_drivers[mixed], axis=0):
            vs = mixed[(g.mixed_drivers[mixed] == pair).all(1)]
            u = d[:, pair] @ w[n_r, pair]
            sig = np.logaddexp(0.0, gain[n_r] * (u - off[n_r]))
            y[:, vs] = np.convolve(sig, h)[: d.shape[0], None] * g.amplitude[vs][None, :]
    return y


def sample_tr(y: np.ndarray, tr_s: float, n_tr: int) -> np.ndarray:
    """Mean of the 2 Hz response over each ``[k * tr_s, (k + 1) * tr_s)``: (n_tr, V)."""
    from tinytribe.grids import overlap

    w = overlap(np.arange(y.shape[0]) / RATE_HZ, 1.0 / RATE_HZ, np.arange(n_tr) * tr_s, tr_s)
    return (w / w.sum(1, keepdims=True)) @ y


def n_trs(duration_s: float, config: SimulationConfig) -> int:
    return int((duration_s + config.tail_s) // config.tr_s)


def noise(g: Generator, n_tr: int, rng: np.random.Generator, adjacency) -> np.ndarray:
    """Unit-variance AR(1), spatially smooth noise: (n_tr, 20484)."""
    rho = g.config.noise_ar
    white = rng.standard_normal((n_tr, 20484))
    smooth = _smooth_on_mesh(white.T, adjacency, g.config.noise_smoothing).T
    smooth /= smooth.std(axis=0, keepdims=True) + 1e-12
    out = np.empty_like(smooth)
    out[0] = smooth[0]
    for k in range(1, n_tr):
        out[k] = rho * out[k - 1] + math.sqrt(1 - rho**2) * smooth[k]
    return out


ARRAYS = ("regions", "mixed_drivers", "amplitude", "snr", "medial_wall", "subject_weights", "subject_gain",
          "subject_offset", "subject_snr")


def save_generator(g: Generator, root) -> None:
    """``generator.json`` (config, HRF peaks, driver norms) and ``generator.npz`` (maps, subject arrays,
    feature directions) in ``root``: enough to recompute every response."""
    from pathlib import Path

    from tinytribe._io import atomic_write, atomic_write_json

    root = Path(root)
    atomic_write_json(root / "generator.json", {
        "config": asdict(g.config), "hrf_peak_s": g.hrf_peak_s, "norms": g.norms, "regions": list(REGIONS),
        "region_atlases": {k: [a, list(labels), w] for k, (a, labels, w) in REGIONS.items()}, "drivers": list(DRIVERS)})
    arrays = {k: getattr(g, k) for k in ARRAYS} | {f"dir__{k}": v for k, v in g.directions.items()}
    atomic_write(root / "generator.npz", lambda f: np.savez(f, **arrays))


def load_generator(root) -> Generator:
    import json
    from pathlib import Path

    root = Path(root)
    meta = json.loads((root / "generator.json").read_text())
    cfg = meta["config"]
    cfg["snr_range"] = tuple(cfg["snr_range"])
    with np.load(root / "generator.npz") as z:
        arrays = {k: z[k] for k in ARRAYS}
        directions = {k.split("__", 1)[1]: z[k] for k in z.files if k.startswith("dir__")}
    return Generator(config=SimulationConfig(**cfg), hrf_peak_s=meta["hrf_peak_s"], norms=meta["norms"],
                     directions=directions, **arrays)


MODALITY_DRIVERS = {"video": ("content", "motion"), "audio": ("audio",), "text": ("text", "narrative")}


def modality_maps(g: Generator) -> dict[str, np.ndarray]:
    """Ground truth on fsaverage5: how strongly each vertex is driven by video, audio and text, for
    the average subject (vertex amplitude x the share of its region's driver weights)."""
    w = g.subject_weights.mean(0)                                   # (n_regions + 1, n_drivers)
    share = np.zeros((20484, len(DRIVERS)))
    for k in range(len(REGIONS)):
        share[g.regions == k + 1] = w[k] / w[k].sum()
    mixed = np.flatnonzero(g.regions == -1)
    for j in range(2):
        share[mixed, g.mixed_drivers[mixed, j]] += 0.5
    if "language" in REGIONS:
        right = (g.regions == list(REGIONS).index("language") + 1) & (np.arange(20484) >= 10242)
        share[right] *= g.config.right_language_gain
    return {m: g.amplitude * share[:, [DRIVERS.index(d) for d in ds]].sum(1) for m, ds in MODALITY_DRIVERS.items()}
