"""The student's configuration and the registry of named sizes.

``ModelConfig`` is the single source of truth; the JSON files in ``configs/`` only fill it in, and
:func:`get_config` scans that folder (when called, never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinytribe.config import apply_overrides, load_json_config
from tinytribe.formats import MODALITIES, space_size

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class ModelConfig:
    """Every size and switch of the Tiny-TRIBE student (design defaults).

    Attributes:
        input_dims: input size per modality, in the order text, audio, video: 386 for text (384 MiniLM
            and the two word-timing channels of feature cache 2: ``FeatureCache.model_input``), 384
            Whisper-Tiny, 640 MobileViT-S or 1280 EfficientNet-Lite0.
        d_model: token width (512).
        proj_hidden: projector hidden width (768).
        n_layers, n_heads: fusion transformer depth and heads (4, 8 of 64).
        local_layers: how many of the first layers add the temporal decay bias (2).
        decay_scale_s: initial decay length of that bias in seconds (6 s: bias = -dt / 6 s).
        n_experts, top_k, expert_hidden: MoE feed-forward (8 experts, top-2, 1024 hidden).
        expert_init_noise: std of the noise added to each copy of the shared initial expert.
        drop_path: stochastic depth of the last layer; layer l of L drops with p = l / L * drop_path.
        dropout: dropout in projectors and attention outputs.
        max_steps: longest window in feature steps (2048 = 17 min at 2 Hz).
        trained_steps: longest window training has used, in steps (set by training; 0 = none yet):
            time embeddings beyond it are untrained, and a longer forward warns.
        feature_rate_hz: rate of the feature steps (2 Hz).
        hrf_taps: taps of the causal HRF convolution at the feature rate (33 taps = 16 s at 2 Hz).
        space: output space (``fsaverage5``, ``fsaverage4``, ``schaefer-400``, ``schaefer-1000``, ``custom:N``).
        n_subjects: subjects with their own FiLM vectors; the average subject is their mean.
        n_new_subjects: subjects added later by ``add_subjects``, held apart for adaptation.
        subject_keys: ``[study, subject]`` of each FiLM row (``SubjectIndex.keys``, set by training), so
            that a checkpoint knows whose rows it holds; None: not recorded.
        teacher_dim: width of the teacher activations the KD feature head predicts (1152).
    """

    name: str = "custom"
    input_dims: list[int] = field(default_factory=lambda: [386, 384, 1280])
    d_model: int = 512
    proj_hidden: int = 768
    n_layers: int = 4
    n_heads: int = 8
    local_layers: int = 2
    decay_scale_s: float = 6.0
    n_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 1024
    expert_init_noise: float = 0.01
    drop_path: float = 0.2
    dropout: float = 0.1
    max_steps: int = 2048
    trained_steps: int = 0
    feature_rate_hz: float = 2.0
    hrf_taps: int = 33
    space: str = "fsaverage4"
    n_subjects: int = 4
    n_new_subjects: int = 0
    subject_keys: list[list[str]] | None = None
    teacher_dim: int = 1152

    def __post_init__(self) -> None:
        if len(self.input_dims) != len(MODALITIES):
            raise ValueError(f"input_dims needs one size per modality {MODALITIES}, got {self.input_dims}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must be in 1..n_experts, got {self.top_k}")
        if not 0 <= self.local_layers <= self.n_layers:
            raise ValueError(f"local_layers must be in 0..n_layers, got {self.local_layers}")
        if self.hrf_taps * 1.0 / self.feature_rate_hz < 16.0:
            raise ValueError(f"hrf_taps={self.hrf_taps} covers {self.hrf_taps / self.feature_rate_hz:g} s at "
                             f"{self.feature_rate_hz:g} Hz; the HRF needs at least 16 s")
        space_size(self.space)

    @property
    def n_outputs(self) -> int:
        return space_size(self.space)


def list_configs() -> list[str]:
    """Names of the shipped configs (``configs/*.json``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name: str | Path, overrides: list[str] | None = None) -> ModelConfig:
    """A named config (``"tiny-tribe-v3"``), or a JSON file path, with ``key=value`` overrides."""
    path = Path(name)
    if not path.suffix:
        path = CONFIG_DIR / f"{name}.json"
        if not path.exists():
            raise ValueError(f"unknown model config {name!r} (known: {', '.join(list_configs())})")
    cfg = load_json_config(ModelConfig, path)
    return apply_overrides(cfg, overrides or [], prefix="model.")
