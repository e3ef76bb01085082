"""What makes a resumed run continue exactly: the random states, and the batch order of each epoch."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """torch / CUDA / NumPy / Python random states as tensors and plain values (``weights_only`` loads them)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": torch.as_tensor(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2]), "numpy_gauss": [int(np_state[3]), float(np_state[4])],
             "python": list(random.getstate()[1]), "python_gauss": random.getstate()[2]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state.get("numpy_gauss", [0, 0.0])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], np.uint32), state["numpy_pos"], has_gauss, gauss))
    random.setstate((3, tuple(state["python"]), state.get("python_gauss")))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, world: int = 1) -> list[list[int]]:
    """The batches of window indices of one epoch: a permutation fixed by (seed, epoch). A last batch
    smaller than the number of processes is dropped (every process needs a window)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) >= world]
