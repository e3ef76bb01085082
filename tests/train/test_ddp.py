"""DistributedDataParallel through torchrun, on CPU with gloo: two processes' gradients equal one
process's on the same global batch, and the training loop runs under torchrun.

Conditions of the equality (tinytribe.train.distributed): dropout, stochastic depth and modality
dropout off; the MoE's auxiliary loss excluded (weight 0: its balance statistics are each process's
own); each process's share as large as the other's and its windows holding as many valid targets
(four windows of the demo's 120 s corpus stimuli: every term is a mean over valid rows).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def _torchrun(args: list[str], env: dict, n: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(env, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_processes_gradients_equal_one_process_on_the_global_batch(demo_study, tmp_path, subprocess_env):
    sys.path.insert(0, str(HERE))
    from ddp_grads import gradients

    from tinytribe.train import phase2

    probe = phase2.setup([demo_study], tmp_path / "probe", overrides=["model.d_model=32"], resume=None)
    corpus = [i for i, (_, w) in enumerate(probe.recipe.dataset.windows) if w.stimulus.startswith("corpus")][:4]
    rows = {int(probe.recipe.dataset[i]["teacher"].shape[0]) for i in corpus}
    assert len(corpus) == 4 and len(rows) == 1, "the test needs four windows with equally many teacher rows"

    done = _torchrun([str(HERE / "ddp_grads.py"), str(demo_study), str(tmp_path / "ddp.pt"), *map(str, corpus)],
                     subprocess_env)
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-1500:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["world"] == 2 and ddp["shares"] == [corpus[:2], corpus[2:]], "each process computed its own half"
    whole, _ = gradients(str(demo_study), corpus, str(tmp_path / "one"))
    assert set(whole) <= set(ddp["grads"]) and len(whole) > 50
    for name, g in whole.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-7, msg=lambda m: f"{name}: {m}")
    # the gradients are not trivially equal: one process's half of the batch alone gives others
    half, _ = gradients(str(demo_study), corpus[:2], str(tmp_path / "half"))
    assert not torch.allclose(half["head.proj.weight"], whole["head.proj.weight"], rtol=1e-3)


@pytest.mark.slow
def test_the_training_loop_runs_under_torchrun(demo_study, tmp_path, subprocess_env):
    from tinytribe.formats import Checkpoint

    from tiny import TINY

    run = tmp_path / "ddp_run"
    done = _torchrun(["-m", "tinytribe.train.phase2", "--study", str(demo_study), "--run-dir", str(run), "--no-progress",
                      *[f"--{o}" for o in TINY], "--loop.max_steps=3"], subprocess_env)
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-1500:]
    assert done.stdout.count("finished 3 steps") == 1, "only rank 0 reports"
    ck = Checkpoint.load(run / "checkpoints" / "last.pt")
    assert ck.step == 3 and ck.data_position["batches_per_epoch"] == 2


def test_shards_split_every_global_batch_without_overlap():
    from tinytribe.train import distributed as dist

    for n in range(1, 12):
        for world in range(1, 5):
            parts = [dist.shard(list(range(100, 100 + n)), dist.Dist(r, world, r)) for r in range(world)]
            assert sorted(i for p in parts for i in p) == list(range(100, 100 + n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
