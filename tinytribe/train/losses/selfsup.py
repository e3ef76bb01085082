"""Phase 1 tasks on hand-checkable pieces (design, "Phase 1 -- Self-supervised").

- :func:`draw_masked`: per sample, 0 / 1 / 2 of the modalities with content hidden (p = 0.25 / 0.50 /
  0.25), never all of them.
- :func:`reconstruction`: 0.7 MSE + 0.3 (1 - cosine) of a head's prediction and the detached projector
  output at the hidden tokens.
- :func:`contrastive`: InfoNCE (tau 0.07) between modalities of the same sample and step, each
  anchor's divided by the log of its candidate count (1 is chance, 0 perfect: comparable across
  batches whatever they hold, where the raw value moves with the number of valid tokens). For an
  anchor token (sample b, step t, modality m) and another modality m' that (b, t) has, the positive
  is (b, t, m'); the candidates are every m' token of the batch except those of sample b within
  ``gap_steps`` of t (neighbouring steps at 2 Hz, and text carried for seconds, are near-duplicates
  of the positive, not negatives); the positive itself is kept. Every ordered pair (m, m') counts.
- :func:`next_step`: 0.5 MSE + 0.5 (1 - cosine) of the causal pass's prediction at t and the detached
  non-causal pooled representation at t + 1.
- :func:`swap_chunks` / temporal order: each segment cut into 4 chunks; adjacent pairs swapped at
  random (non-overlapping); each adjacent pair of positions labelled in order (1) or not (0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MASK_COUNTS_P = (0.25, 0.50, 0.25)   # hide 0, 1 or 2 modalities


def draw_masked(content: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, M) bool modalities with content -> (B, M) bool modalities to hide: 0, 1 or 2 of them with
    p = 0.25 / 0.5 / 0.25, at most all but one."""
    B, M = content.shape
    dev = content.device
    want = torch.multinomial(torch.tensor(MASK_COUNTS_P).expand(B, -1), 1, generator=generator)[:, 0].to(dev)  # (B,)
    k = torch.minimum(want, (content.sum(1) - 1).clamp(min=0))
    score = torch.where(content, torch.rand(B, M, generator=generator).to(dev), torch.full((B, M), -1.0, device=dev))
    rank = score.argsort(dim=1, descending=True).argsort(dim=1)   # 0 = the largest draw
    return content & (rank < k[:, None])


def reconstruction(pred: torch.Tensor, target: torch.Tensor, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """0.7 MSE + 0.3 (1 - cos) over the tokens ``where`` (B, T) of (B, T, D) tensors (the target
    detached); returns the loss and the mean cosine (NaN-free zeros when no token is hidden)."""
    p, t = pred[where].float(), target[where].detach().float()
    if not p.shape[0]:
        zero = pred.sum() * 0.0
        return zero, zero.detach()
    cos = F.cosine_similarity(p, t, dim=-1, eps=1e-6)
    return 0.7 * (p - t).pow(2).mean() + 0.3 * (1 - cos).mean(), cos.mean().detach()


def contrastive(z: torch.Tensor, valid: torch.Tensor, *, tau: float = 0.07, gap_steps: int = 8
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE across modalities (module docstring) of L2-normalised embeddings z (B, T, M, E) at the
    valid tokens (B, T, M); returns the loss and R@1 (the share of anchors whose positive scores
    highest)."""
    B, T, M, _ = z.shape
    dev = z.device
    t_idx = torch.arange(T, device=dev)
    near = (t_idx[:, None] - t_idx[None, :]).abs() <= gap_steps   # (T, T)
    losses, hits = [], []
    for m in range(M):
        for n in range(M):
            if m == n:
                continue
            both = valid[:, :, m] & valid[:, :, n]   # (B, T) anchors with a positive
            if not both.any():
                continue
            cand = valid[:, :, n].reshape(-1)        # (B*T,) candidates: tokens of modality n
            a = z[:, :, m][both]                     # (A, E)
            c = z[:, :, n].reshape(B * T, -1)        # (B*T, E)
            logits = a @ c.T / tau                   # (A, B*T)
            ab, at = both.nonzero(as_tuple=True)     # anchor sample and step
            same = ab[:, None] == torch.arange(B, device=dev).repeat_interleave(T)[None]       # (A, B*T)
            close = near[at][:, None, :].expand(-1, B, -1).reshape(len(at), B * T)             # (A, B*T)
            positive = ab * T + at                    # (A,) the column of the positive
            allowed = cand[None] & ~(same & close)
            allowed[torch.arange(len(at), device=dev), positive] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
            chance = allowed.sum(1).float().log().clamp(min=math.log(2))   # the loss of a uniform guess
            losses.append(F.cross_entropy(logits, positive, reduction="none") / chance)
            hits.append((logits.argmax(dim=1) == positive).float())
    if not losses:
        zero = z.sum() * 0.0
        return zero, zero.detach()
    return torch.cat(losses).mean(), torch.cat(hits).mean().detach()


def next_step(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pred (B, T, D) at t against the detached target (B, T, D) at t + 1, where steps t and t + 1 are
    both valid (B, T); 0.5 MSE + 0.5 (1 - cos). Returns the loss and the mean cosine."""
    both = valid[:, :-1] & valid[:, 1:]
    p, t = pred[:, :-1][both].float(), target[:, 1:][both].detach().float()
    if not p.shape[0]:
        zero = pred.sum() * 0.0
        return zero, zero.detach()
    cos = F.cosine_similarity(p, t, dim=-1, eps=1e-6)
    return 0.5 * (p - t).pow(2).mean() + 0.5 * (1 - cos).mean(), cos.mean().detach()


def swap_chunks(x: torch.Tensor, n_chunks: int = 4, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A chunk order per sample: adjacent pairs (0, 1), (1, 2), ... swapped with p = 0.5 each, a pair
    skipped when its first chunk was just swapped (swaps never overlap).

    Args:
        x: (B, T, ...) any per-step tensor; T is cut into ``n_chunks`` chunks (the last takes the rest).

    Returns:
        the steps gathered in the new order (B, T, ...), the order (B, n_chunks) (position -> original
        chunk), and labels (B, n_chunks - 1): 1 where position j + 1 holds the chunk that followed
        position j's, else 0.
    """
    B, T = x.shape[:2]
    if T < n_chunks:
        raise ValueError(f"a segment of {T} steps cannot make {n_chunks} chunks")
    order = torch.arange(n_chunks).repeat(B, 1)
    u = torch.rand(B, n_chunks - 1, generator=generator)
    for b in range(B):
        j = 0
        while j < n_chunks - 1:
            if u[b, j] < 0.5:
                order[b, j], order[b, j + 1] = order[b, j + 1].item(), order[b, j].item()
                j += 2
            else:
                j += 1
    size = T // n_chunks
    bounds = [(k * size, (k + 1) * size if k < n_chunks - 1 else T) for k in range(n_chunks)]
    steps = []
    for b in range(B):
        steps.append(torch.cat([torch.arange(*bounds[k]) for k in order[b].tolist()]))
    index = torch.stack(steps).to(x.device)   # (B, T): new step -> original step
    gathered = x[torch.arange(B, device=x.device)[:, None], index]
    labels = (order[:, 1:] == order[:, :-1] + 1).long().to(x.device)
    return gathered, order.to(x.device), labels


def chunk_means(h: torch.Tensor, valid: torch.Tensor, n_chunks: int = 4) -> torch.Tensor:
    """(B, T, D) -> (B, n_chunks, D): the mean of each chunk's valid steps (chunks as :func:`swap_chunks`)."""
    T = h.shape[1]
    size = T // n_chunks
    out = []
    for k in range(n_chunks):
        a, b = k * size, (k + 1) * size if k < n_chunks - 1 else T
        w = valid[:, a:b, None].to(h.dtype)
        out.append((h[:, a:b] * w).sum(1) / w.sum(1).clamp(min=1))
    return torch.stack(out, 1)
