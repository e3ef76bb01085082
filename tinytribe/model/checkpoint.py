"""Saving a student with everything needed to rebuild it, and rebuilding it from the file alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinytribe.config import from_dict, to_dict
from tinytribe.formats import Checkpoint, FormatError
from tinytribe.model.config import ModelConfig
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.provenance import provenance


def save_checkpoint(model: TinyTribe, path: str | Path, *, phase: str, **state: Any) -> Path:
    """Write ``model`` (weights + resolved config) and any training state (``step``, ``epoch``,
    ``optimizer_state``, ``rng_state``, ...) in the checkpoint format of docs/FORMATS.md."""
    ck = Checkpoint(model_state=model.state_dict(), config=to_dict(model.config), phase=phase,
                    provenance=provenance(), **state)
    return ck.save(path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[TinyTribe, Checkpoint]:
    """Rebuild the model a checkpoint was made with and load its weights.

    Returns:
        The model (in eval mode) and the checkpoint (training state, metrics, provenance).
    """
    ck = Checkpoint.load(path, map_location=map_location)
    cfg = from_dict(ModelConfig, ck.config, where=f"{path}: config")
    model = TinyTribe(cfg)
    try:
        model.load_state_dict(ck.model_state)
    except RuntimeError as e:
        raise FormatError(f"{path}: weights do not match the saved config ({str(e).splitlines()[0]})") from None
    return model.eval(), ck
