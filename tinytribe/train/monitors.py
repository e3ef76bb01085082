"""Routing health of the MoE: the monitors a run logs and the rule that stops a collapsed one."""

from __future__ import annotations

import math

import numpy as np


def routing_health(share: np.ndarray) -> dict[str, float]:
    """Monitors of (n_layers, E) expert shares (fractions of routing slots):

    ``route_entropy_frac``: the lowest per-layer entropy of the shares over ln E (1 when balanced);
    ``min_share_e`` / ``max_share_e``: the smallest and largest share in any layer, times E (1 when
    balanced; healthy within 0.5-2); ``share_e<i>``: expert i's share averaged over layers, times E.
    """
    share = np.asarray(share, np.float64)
    E = share.shape[-1]
    p = share / np.clip(share.sum(-1, keepdims=True), 1e-12, None)
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)
    out = {"route_entropy": float(entropy.min()), "route_entropy_frac": float(entropy.min() / math.log(E)),
           "min_share_e": float(p.min() * E), "max_share_e": float(p.max() * E)}
    return out | {f"share_e{i}": float(v * E) for i, v in enumerate(p.reshape(-1, E).mean(0))}


def collapsed(health: dict[str, float]) -> str | None:
    """Why routing counts as collapsed (an expert's share below 0.1/E, or entropy below 0.3 ln E), or None."""
    if health["min_share_e"] < 0.1:
        return f"an expert's token share is {health['min_share_e']:.3f}/E (< 0.1/E)"
    if health["route_entropy_frac"] < 0.3:
        return f"routing entropy is {health['route_entropy_frac']:.2f} ln E (< 0.3 ln E)"
    return None
