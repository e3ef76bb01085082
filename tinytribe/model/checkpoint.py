"""Saving a student with everything needed to rebuild it, rebuilding it from the file alone, and
loading part of one model's weights into another (a Phase 1 checkpoint into the full model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinytribe.config import from_dict, to_dict
from tinytribe.formats import Checkpoint, FormatError
from tinytribe.model.config import ModelConfig
from tinytribe.model.tinytribe import TinyTribe
from tinytribe.provenance import provenance


def save_checkpoint(model: TinyTribe, path: str | Path, *, phase: str, **state: Any) -> Path:
    """Write ``model`` (weights + resolved config) and any training state (``step``, ``epoch``,
    ``optimizer_state``, ``rng_state``, ``recipe``, ``heads_state``, ...) in the checkpoint format of
    docs/FORMATS.md."""
    ck = Checkpoint(model_state=model.state_dict(), config=to_dict(model.config), phase=phase,
                    provenance=provenance(), **state)
    return ck.save(path)


def model_from_checkpoint(ck: Checkpoint, where: str | Path = "<checkpoint>") -> TinyTribe:
    """The model a checkpoint was made with, its weights loaded (train mode)."""
    cfg = from_dict(ModelConfig, ck.config, where=f"{where}: config")
    model = TinyTribe(cfg)
    try:
        model.load_state_dict(ck.model_state)
    except RuntimeError as e:
        raise FormatError(f"{where}: weights do not match the saved config ({str(e).splitlines()[0]})") from None
    return model


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[TinyTribe, Checkpoint]:
    """Rebuild the model a checkpoint was made with and load its weights.

    Returns:
        The model (in eval mode) and the checkpoint (training state, metrics, provenance).
    """
    ck = Checkpoint.load(path, map_location=map_location)
    return model_from_checkpoint(ck, path).eval(), ck


@dataclass
class LoadReport:
    """What :func:`load_partial` did: tensors ``taken`` from the checkpoint, ``skipped`` ones (name:
    why -- not in this model, or another shape) and ``new`` ones (this model's tensors the checkpoint
    lacks, left at their initialisation)."""

    taken: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"took {len(self.taken)} tensors", f"skipped {len(self.skipped)}", f"{len(self.new)} newly initialised"]
        detail = [f"{k} ({v})" for k, v in list(self.skipped.items())[:3]] + self.new[:3]
        return ", ".join(parts) + (f": {'; '.join(detail)}" + (" ..." if len(self.skipped) + len(self.new) > 6 else "")
                                   if detail else "")


def load_partial(model: TinyTribe, state: dict[str, Any]) -> LoadReport:
    """Load the tensors of ``state`` that this model has with the same shape; report the rest.

    For starting one phase from another's checkpoint (Phase 1's fusion model into Phase 2's full
    model, an fsaverage4 model into a Schaefer-1000 one: every tensor but the output projection)."""
    own = model.state_dict()
    report = LoadReport()
    take = {}
    for name, t in state.items():
        if name not in own:
            report.skipped[name] = "not in this model"
        elif tuple(own[name].shape) != tuple(t.shape):
            report.skipped[name] = f"shape {tuple(t.shape)} here {tuple(own[name].shape)}"
        else:
            take[name] = t
            report.taken.append(name)
    report.new = [n for n in own if n not in take]
    model.load_state_dict(take, strict=False)
    return report
