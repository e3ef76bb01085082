"""What a teacher is to tinytribe: load once, then predict time windows of a stimulus.

A teacher returns its raw outputs in its native space with the *stimulus* time of each row;
:mod:`tinytribe.teacher.cache` turns them into teacher-cache files (``docs/FORMATS.md`` §3):
BOLD sample times (stimulus time + the teacher's HRF offset), reduced space, float16.

Implementations: :class:`~tinytribe.teacher.tribev2.TribeV2Teacher` (the real TRIBE v2, run in its
own virtual environment) and :class:`~tinytribe.teacher.standin.StandInTeacher` (small and
deterministic, for tests and CI). ``load_teacher(name, **options)`` builds either by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TeacherInfo:
    """What a teacher's outputs mean.

    Attributes:
        id: model id (e.g. ``facebook/tribev2``).
        revision: weights/code revision; part of the cache key.
        space: output space of ``predictions`` (``fsaverage5`` for TRIBE v2).
        rate_hz: rows of ``predictions`` per second of stimulus.
        hrf_offset_s: the row made from stimulus time ``t`` stands for BOLD at ``t + hrf_offset_s``.
        activations: names of the internal activations returned, with their dimension.
    """

    id: str
    revision: str
    space: str
    rate_hz: float
    hrf_offset_s: float
    activations: dict[str, int] = field(default_factory=dict)


@dataclass
class TeacherOutput:
    """A teacher's outputs for the window ``[start_s, end_s)`` of one stimulus.

    ``predictions[k]`` was made from the stimulus interval starting at ``times_s[k]`` (width
    ``1 / rate_hz``); the times lie on the stimulus-wide grid ``k / rate_hz`` inside the window, so
    windows of one stimulus stitch without gaps or repeats.
    """

    predictions: np.ndarray                  # (n, V) float32, native space
    times_s: np.ndarray                      # (n,) stimulus seconds
    activations: dict[str, np.ndarray]       # name -> (m, D)
    activation_times_s: dict[str, np.ndarray]
    events: list[dict[str, Any]] = field(default_factory=list)


class Teacher(Protocol):
    info: TeacherInfo

    def predict(self, media: Path, start_s: float, end_s: float) -> TeacherOutput:
        """Outputs for the window ``[start_s, end_s)`` of ``media`` (stimulus seconds)."""
        ...

    def close(self) -> None:
        """Free the model (and stop any worker process)."""
        ...


def grid_times(start_s: float, end_s: float, rate_hz: float) -> np.ndarray:
    """The stimulus-wide grid ``k / rate_hz`` inside ``[start_s, end_s)``."""
    k0 = int(np.ceil(start_s * rate_hz - 1e-9))
    k1 = int(np.ceil(end_s * rate_hz - 1e-9))
    return np.arange(k0, k1) / rate_hz


TEACHERS = {  # name -> "module:class", imported only when asked for
    "tribev2": "tinytribe.teacher.tribev2:TribeV2Teacher",
    "standin": "tinytribe.teacher.standin:StandInTeacher",
    "demo": "tinytribe.data.demo.teacher:DemoTeacher",
    "student": "tinytribe.train.pseudo:StudentTeacher",   # a trained student's pseudo-labels (design 5c)
}


def load_teacher(name: str, **options: Any) -> Teacher:
    """A teacher by name (``tribev2``, ``standin``, ``demo``, ``student``) or as ``"module:Class"``; ``options`` go
    to its constructor."""
    import importlib

    spec = TEACHERS.get(name, name)
    if ":" not in spec:
        raise ValueError(f"unknown teacher {name!r}; choose from {', '.join(TEACHERS)} or give 'module:Class'")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
