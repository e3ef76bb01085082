"""The Tiny-TRIBE v3 student: features of three modalities in, cortical responses on any time grid out."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from tinytribe.formats import MODALITIES
from tinytribe.model.config import ModelConfig
from tinytribe.model.film import OutputHead
from tinytribe.model.hrf import HRFConv
from tinytribe.model.pooling import GatedModalityPool
from tinytribe.model.projector import ModalityProjector, MotionModule
from tinytribe.model.timegrid import TimeGrid, overlap_weights
from tinytribe.model.tokens import ModalityEmbeddings, align_length, align_mask, interleave, modality_dropout
from tinytribe.model.transformer import FusionTransformer


@dataclass
class TinyTribeOutput:
    """What a forward pass returns.

    Attributes:
        responses: per requested grid, (B, N, n_outputs).
        aux_loss: MoE auxiliary loss summed over layers (scalar); add it to the training loss.
        aux: its parts (``load_balance``, ``z_loss``) and ``expert_share`` (n_layers, E).
        gates: (B, T, M) modality gates per step (for modality maps).
        available: (B, M) the modalities actually used (after modality dropout) at any step.
        fused: (B, T, D) pooled fused representation at the feature rate (``return_fused``).
        kd_features: (B, T, teacher_dim) its projection for feature distillation (``return_fused``).
        kd: per grid of ``kd_grids``, that projection averaged onto the grid: (B, M, teacher_dim).
    """

    responses: dict[str, torch.Tensor]
    aux_loss: torch.Tensor
    aux: dict[str, torch.Tensor]
    gates: torch.Tensor
    available: torch.Tensor
    fused: torch.Tensor | None = None
    kd_features: torch.Tensor | None = None
    kd: dict[str, torch.Tensor] = field(default_factory=dict)


class TinyTribe(nn.Module):
    """Projectors -> motion -> embeddings -> interleave -> MoE transformer -> gated pooling -> HRF -> head.

    Args:
        config: sizes and switches (``ModelConfig``); the model keeps a copy.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = copy.deepcopy(config)
        c = self.config
        self.projectors = nn.ModuleList(ModalityProjector(d, c.proj_hidden, c.d_model, c.dropout) for d in c.input_dims)
        self.motion = MotionModule(c.d_model)
        self.embeddings = ModalityEmbeddings(len(MODALITIES), c.max_steps, c.d_model)
        self.fusion = FusionTransformer(
            d_model=c.d_model, n_heads=c.n_heads, n_layers=c.n_layers, local_layers=c.local_layers,
            n_experts=c.n_experts, top_k=c.top_k, expert_hidden=c.expert_hidden, expert_init_noise=c.expert_init_noise,
            drop_path=c.drop_path, decay_scale_s=c.decay_scale_s, dropout=c.dropout)
        self.pool = GatedModalityPool(c.d_model, len(MODALITIES))
        self.hrf = HRFConv(c.d_model, c.hrf_taps, c.feature_rate_hz)
        self.head = OutputHead(c.d_model, c.n_outputs, c.n_subjects, c.n_new_subjects)
        self.kd_head = nn.Linear(c.d_model, c.teacher_dim)

    def encode(self, features: dict[str, torch.Tensor], available: torch.Tensor, *, causal: bool = False,
               masks: dict[str, torch.Tensor] | None = None, p_modality_dropout: float = 0.0,
               router_temperature: float = 1.0, masked: torch.Tensor | None = None, return_projected: bool = False
               ) -> tuple:
        """Fuse the modalities into per-step, per-modality tokens.

        Args:
            features: ``{"text": (B, T_t, 386), "audio": (B, T_a, 384), "video": (B, T_v, D_v)}`` (the
                sizes of ``config.input_dims``; text is the embedding and its two timing channels); a
                modality no sample has may be left out (a transcript-only study).
            available: (B, 3) bool, the modalities each sample has (order text, audio, video).
            causal: tokens see only their own and earlier steps.
            masks: per modality (B, T_m) bool, the steps with content (padding and empty steps False):
                such tokens are zero before the motion filter, are never attended to, skip the experts
                and are left out of the pooling. None: every step of an available modality counts.
            p_modality_dropout: in training, drop each available modality of a sample with this
                probability (never all of those with content in the window).
            router_temperature: MoE router temperature.
            masked: (B, 3) bool, modalities hidden from the model (Phase 1's masked reconstruction): their
                tokens enter as their embeddings alone (zero features), are never attended to, and -- at
                the steps where the modality has content -- go through the experts as queries (outside
                the MoE statistics), so a head can read them; at least one available modality of each
                sample must stay unmasked.
            return_projected: also return the projector outputs of every modality's real features,
                (B, T, D) per modality, aligned to T (masked ones included: reconstruction targets).

        Returns:
            tokens (B, T, 3, D), the tokens that count (B, T, 3) bool, aux terms (with ``query_mask``
            (B, T, 3), the masked tokens that went through the experts, when ``masked`` is given), and
            with ``return_projected`` the projector outputs ``{modality: (B, T, D)}``.
        """
        missing = [m for m in MODALITIES if m not in features]
        if len(missing) == len(MODALITIES):
            raise ValueError("features hold no modality")
        for m in missing:   # a study without it (a transcript-only study): zeros, unavailable to every sample
            if available[:, MODALITIES.index(m)].any():
                raise ValueError(f"features lack modality {m!r}, which `available` marks as present")
        if missing:
            ref = next(features[m] for m in MODALITIES if m in features)
            features = dict(features) | {m: ref.new_zeros(*ref.shape[:2], self.config.input_dims[MODALITIES.index(m)])
                                         for m in missing}
        for m, d in zip(MODALITIES, self.config.input_dims):
            if features[m].shape[-1] != d:
                raise ValueError(f"{m} inputs have {features[m].shape[-1]} values per step, this model expects {d} "
                                 f"(input_dims); text inputs are FeatureCache.model_input('text') of feature cache 2")
        if available.shape != (features["text"].shape[0], len(MODALITIES)):
            raise ValueError(f"available must be (B, {len(MODALITIES)}), got {tuple(available.shape)}")
        available = available.bool()
        if not available.any(dim=1).all():
            raise ValueError("every sample needs at least one available modality")
        if self.training and p_modality_dropout > 0:
            # drop among the modalities with content in this window: a window whose only kept modality is
            # a silent one (a transcript with no word in it) would have no token at all
            content = available.clone()
            for i, m in enumerate(MODALITIES):
                if masks is not None and m in masks:
                    content[:, i] &= masks[m].to(available.device).bool().any(dim=1)
            available = modality_dropout(content, p_modality_dropout) | (available & ~content)
        T = max(features[m].shape[1] for m in MODALITIES)
        if T > self.config.trained_steps > 0 and not self.training:
            warnings.warn(f"a window of {T} steps is longer than the longest trained one ({self.config.trained_steps}): "
                          f"its later time embeddings were never trained; predict in shorter windows", stacklevel=3)
        if masked is not None:
            masked = masked.to(available.device).bool() & available
            if (available & ~masked).sum(dim=1).eq(0).any():
                raise ValueError("masked hides every available modality of a sample: keep at least one")
        tokens, counts, queries, projected = [], [], [], {}
        for i, m in enumerate(MODALITIES):
            x = features[m]
            x = torch.where(available[:, i, None, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            x = self.projectors[i](x.to(self.kd_head.weight.dtype))  # (B, T_m, D), in the model's dtype
            k = available[:, i, None].expand(-1, x.shape[1])  # (B, T_m): the steps that count
            if masks is not None and m in masks:
                k = k & masks[m].to(k.device).bool()
            if return_projected:
                projected[m] = align_length(x, T)
            if masked is not None:
                queries.append(align_mask(k & masked[:, i, None], T))   # masked steps with content: queries
                k = k & ~masked[:, i, None]
            if (masks is not None and m in masks) or masked is not None:
                x = torch.where(k[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
            if m == "video":
                x = self.motion(x, causal=causal)
            x = self.embeddings(x, i)  # (B, T_m, D)
            tokens.append(align_length(x, T))  # (B, T, D)
            counts.append(align_mask(k, T))  # (B, T)
        seq = interleave(tokens)  # (B, 3T, D)
        step_mask = torch.stack(counts, dim=2)  # (B, T, 3)
        query_mask = torch.stack(queries, dim=2) if masked is not None else None  # (B, T, 3)
        fused, aux = self.fusion(seq, step_mask.reshape(-1, T * len(MODALITIES)), n_modalities=len(MODALITIES),
                                 rate_hz=self.config.feature_rate_hz, causal=causal, temperature=router_temperature,
                                 query_mask=query_mask.reshape(-1, T * len(MODALITIES)) if query_mask is not None
                                 else None)  # (B, 3T, D)
        if query_mask is not None:
            aux["query_mask"] = query_mask
        out = (fused.reshape(fused.shape[0], T, len(MODALITIES), -1), step_mask, aux)
        return (*out, projected) if return_projected else out

    def forward(self, features: dict[str, torch.Tensor], available: torch.Tensor, t0: torch.Tensor,
                grids: dict[str, TimeGrid], subject: torch.Tensor | None = None, *, causal: bool = False,
                masks: dict[str, torch.Tensor] | None = None, p_modality_dropout: float = 0.0,
                router_temperature: float = 1.0, return_fused: bool = False,
                kd_grids: dict[str, TimeGrid] | None = None, average_grids: tuple[str, ...] = ()) -> TinyTribeOutput:
        """Predict responses on each requested time grid.

        Args:
            features, available, masks: as in :meth:`encode`.
            t0: (B,) stimulus time (s) of feature step 0.
            grids: named target grids, e.g. ``{"fmri": TimeGrid(times, 1.49), "teacher": TimeGrid(times, 1.0)}``.
            subject: (B,) subject ids; None or -1 for the average subject.
            return_fused: also return the pooled representation and its KD projection.
            kd_grids: named grids to average the KD projection onto (the teacher activations' times,
                overlap-weighted as the responses are): ``out.kd[name]`` (B, M, teacher_dim).
            average_grids: grids of ``grids`` predicted for the average subject whatever ``subject`` is
                (a teacher predicts the average subject: Phase 3 compares it with that, and each
                subject's own prediction with its fMRI, from one pass through the fusion model).
        """
        tokens, step_mask, aux = self.encode(features, available, causal=causal, masks=masks,
                                             p_modality_dropout=p_modality_dropout,
                                             router_temperature=router_temperature)  # (B, T, 3, D)
        fused, gates = self.pool(tokens, step_mask)  # (B, T, D), (B, T, 3)
        unknown = set(average_grids) - set(grids)
        if unknown:
            raise ValueError(f"average_grids names grids not given: {sorted(unknown)}")
        hrf = self.hrf(fused)
        h = self.head.condition(hrf, subject)  # (B, T, D)
        h_avg = self.head.condition(hrf, None) if average_grids and subject is not None else h
        t0 = t0.to(h.device)  # times may come from the CPU side of a data pipeline
        responses = {name: self.head.project(h_avg if name in average_grids else h,
                                             overlap_weights(t0, h.shape[1], self.config.feature_rate_hz, g))
                     for name, g in grids.items()}  # (B, N, V) each
        out = TinyTribeOutput(responses=responses, aux_loss=aux["aux_loss"], aux=aux, gates=gates,
                              available=step_mask.any(dim=1))
        if return_fused or kd_grids:
            out.fused, out.kd_features = fused, self.kd_head(fused)  # (B, T, D), (B, T, teacher_dim)
        for name, g in (kd_grids or {}).items():
            w = overlap_weights(t0, h.shape[1], self.config.feature_rate_hz, g)  # (B, M, T)
            out.kd[name] = w.to(out.kd_features.dtype) @ out.kd_features  # (B, M, teacher_dim)
        return out

    def add_subjects(self, n: int) -> list[nn.Parameter]:
        """Add ``n`` subjects (FiLM vectors starting at the average subject) and return their parameters."""
        params = self.head.film.add_subjects(n)
        self.config.n_subjects = self.head.film.gamma.shape[0]
        self.config.n_new_subjects = n
        return params
