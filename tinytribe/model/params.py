"""Parameter counts per stage, beside the design's figures."""

from __future__ import annotations

from torch import nn

from tinytribe.model.tinytribe import TinyTribe

# The design card's figures (the forward-pass diagram), in parameters.
DESIGN = {"projectors": 2.5e6, "temporal embeddings": 3.1e6, "transformer": 37.8e6, "output projection": 2.6e6}


def _count(module: nn.Module | list) -> tuple[int, int]:
    params = list(module.parameters()) if isinstance(module, nn.Module) else module
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def parameter_table(model: TinyTribe, design: dict[str, float] | None = None) -> list[dict]:
    """One row per stage: ``stage``, ``total``, ``trainable``, ``active`` (used per token: only
    ``top_k`` of ``n_experts`` experts run), ``design`` (the figure in ``design``, e.g. ``DESIGN`` for
    the tiny-tribe-v3 config, or None)."""
    design = design or {}
    c = model.config
    rows = []

    def add(stage: str, module, active_fraction: float = 1.0) -> None:
        total, trainable = _count(module)
        rows.append({"stage": stage, "total": total, "trainable": trainable, "active": round(total * active_fraction),
                     "design": design.get(stage)})

    add("projectors", model.projectors)
    add("motion module", model.motion)
    add("temporal embeddings", list(model.embeddings.time.parameters()))
    add("modality embeddings", [model.embeddings.kind])
    blocks = model.fusion.blocks
    add("attention", [p for b in blocks for p in [*b.attention.parameters(), *b.ln1.parameters(), *b.ln2.parameters()]]
        + list(model.fusion.ln_f.parameters()))
    add("MoE routers", [p for b in blocks for p in b.moe.router.parameters()])
    add("MoE experts", [p for b in blocks for p in (b.moe.w1, b.moe.b1, b.moe.w2, b.moe.b2)], c.top_k / c.n_experts)
    add("gated pooling", model.pool)
    add("HRF convolution", model.hrf)
    add("output MLP", [*model.head.norm.parameters(), *model.head.mlp.parameters()])
    add("FiLM (per subject)", model.head.film)
    add("output projection", model.head.proj)
    add("KD feature head", model.kd_head)
    trans = [r for r in rows if r["stage"] in ("attention", "MoE routers", "MoE experts")]
    rows.insert(rows.index(trans[0]), {"stage": "transformer", "total": sum(r["total"] for r in trans),
                                       "trainable": sum(r["trainable"] for r in trans),
                                       "active": sum(r["active"] for r in trans), "design": design.get("transformer")})
    body = [r for r in rows if r["stage"] != "transformer"]
    rows.append({"stage": "total", "total": sum(r["total"] for r in body), "trainable": sum(r["trainable"] for r in body),
                 "active": sum(r["active"] for r in body), "design": None})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<22}{'total':>12}{'trainable':>12}{'active/token':>14}{'design':>10}"]
    for r in rows:
        design = f"{r['design'] / 1e6:.1f}M" if r["design"] else ""
        lines.append(f"{r['stage']:<22}{r['total'] / 1e6:>11.3f}M{r['trainable'] / 1e6:>11.3f}M"
                     f"{r['active'] / 1e6:>13.3f}M{design:>10}")
    return "\n".join(lines)
