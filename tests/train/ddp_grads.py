"""Run by ``tests/train/test_ddp.py`` under torchrun: every process computes the DDP gradients of its
share of one global batch; rank 0 saves them (after DDP's all-reduce every process holds the same).

    torchrun --standalone --nproc_per_node=2 tests/train/ddp_grads.py <study> <out.pt> <window indices...>
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny import TINY  # noqa: E402

from tinytribe.data.windows import collate  # noqa: E402
from tinytribe.train import distributed as dist  # noqa: E402
from tinytribe.train import phase2  # noqa: E402

# the conditions under which a split batch's gradients equal the whole batch's (see tinytribe.train.distributed)
EXACT = TINY + ["model.dropout=0", "model.drop_path=0", "kd.modality_dropout=0",
                'kd.weights={"kd": 0.6, "feature": 0.2, "temporal": 0.1, "multires": 0.05, "aux": 0.0}']
STEP = 5000   # past the router warm-up: temperature 1, the aux weight as given (0)


def gradients(study: str, indices: list[int], run_dir: str) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The gradients of this process's share of the global batch ``indices`` (all of it without DDP),
    and the share."""
    run = phase2.setup([study], run_dir, overrides=EXACT, resume=None)
    d = dist.setup("cpu")
    net = dist.wrap(run.model, d, "cpu")
    share = dist.shard(indices, d)
    loss, _ = run.recipe.loss(net, collate([run.recipe.dataset[i] for i in share]), STEP)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in run.model.named_parameters() if p.grad is not None}, share


if __name__ == "__main__":
    study, out, *idx = sys.argv[1:]
    grads, share = gradients(study, [int(i) for i in idx], str(Path(out).parent / "run"))
    d = dist.from_env()
    shares = [None] * d.world
    torch.distributed.all_gather_object(shares, share)
    if d.main:
        torch.save({"world": d.world, "grads": grads, "shares": shares}, out)
    dist.teardown(d)
