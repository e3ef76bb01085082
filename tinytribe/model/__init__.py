"""The Tiny-TRIBE student model (design stages 2-7). ``create_model("tiny-tribe-demo")`` builds one."""

from __future__ import annotations

from pathlib import Path

from tinytribe.model.config import ModelConfig, get_config, list_configs
from tinytribe.model.timegrid import TimeGrid
from tinytribe.model.tinytribe import TinyTribe, TinyTribeOutput


def create_model(name_or_config: str | Path | ModelConfig, overrides: list[str] | None = None) -> TinyTribe:
    """Build a student from a named config, a JSON file or a ``ModelConfig``."""
    cfg = name_or_config if isinstance(name_or_config, ModelConfig) else get_config(name_or_config, overrides)
    return TinyTribe(cfg)


__all__ = ["ModelConfig", "TimeGrid", "TinyTribe", "TinyTribeOutput", "create_model", "get_config", "list_configs"]
