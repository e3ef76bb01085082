"""The parameters every notebook takes, checked before any work starts.

papermill injects ``-p name=value`` into a notebook as plain assignments: a misspelled name becomes a
new variable (the notebook runs on with its default), a wrong type fails deep inside, an unknown
choice fails every item. Each notebook's first library cell calls::

    check_parameters("01_extract_features", globals())

which refuses, in one line listing what is allowed, an unknown name (with the nearest known one), a
value of the wrong type, and a value outside a parameter's choices. The schema below names every
parameter of every notebook with its type; the test suite checks that it matches each notebook's
parameters cell (its names and its defaults), so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from tinytribe.config import ConfigError
from tinytribe.formats import SPACES


@dataclass(frozen=True)
class P:
    """A parameter: its accepted types (``None`` in them: may be None) and, optionally, its choices."""

    types: tuple
    choices: tuple | None = None
    above: float | None = None   # numbers must be greater than this


STR, OPT_STR, FLOAT, OPT_FLOAT, INT, OPT_INT, BOOL = (P((str,)), P((str, None)), P((float,)), P((float, None)),
                                                     P((int,)), P((int, None)), P((bool,)))
SESSION = {"session_limit_s": OPT_FLOAT, "reserve_s": FLOAT, "account": STR, "sync_remote": OPT_STR,
           "force_lock": BOOL, "lease_s": P((float,), above=0.0), "tinytribe_source": OPT_STR}
DETRENDS = (None, "linear", "polynomial", "cosine")

SCHEMAS: dict[str, dict[str, P]] = {
    "00_demo_study": {"root": STR, "size": P((str,), ("small", "large")), "seed": INT,
                      "space": P((str,), ("fsaverage4", "fsaverage5")), "teacher_r": FLOAT, "device": STR,
                      "stories_root": OPT_STR},
    "00_setup_and_plan": {"media_dir": OPT_STR, "run_dir": STR, "chunk_s": FLOAT, "plan_hours": FLOAT,
                          "sync_every_s": FLOAT, **SESSION},
    "01_extract_features": {"media_dir": OPT_STR, "run_dir": STR, "chunk_s": FLOAT,
                            "video_backbone": P((str,), ("efficientnet-lite0", "mobilevit-s")), "video_model": OPT_STR,
                            "empty_transcript": P((str,), ("error", "asr")), "transcript_check": FLOAT,
                            "device": STR, "sync_every_s": FLOAT, **SESSION},
    "02_teacher_inference": {"media_dir": OPT_STR, "run_dir": STR, "teacher": STR, "teacher_options": P((dict,)),
                             "checkpoint": STR, "device": STR, "space": P((str,), tuple(SPACES)), "chunk_s": FLOAT,
                             "job_definition": OPT_STR, "features_dir": OPT_STR, "diversity_k": INT,
                             "diversity_per_cluster": INT, "sync_every_s": FLOAT, **SESSION},
    "03_phase1_selfsup": {"study_dirs": P((list,)), "study_weights": P((dict,)), "run_dir": STR, "model_config": STR,
                          "epochs": OPT_INT, "max_steps": OPT_INT, "batch_size": OPT_INT, "overrides": P((list,)),
                          "resume": OPT_STR, "lazy": BOOL, "device": STR, **SESSION},
    "04_phase2_kd": {"study_dirs": P((list,)), "run_dir": STR, "recipe": P((str,), ("phase2", "sprint")),
                     "model_config": STR, "epochs": OPT_INT, "max_steps": OPT_INT, "overrides": P((list,)),
                     "init_from": OPT_STR, "resume": OPT_STR, "lazy": BOOL, "device": STR, **SESSION},
    "05_phase3_fmri": {"study_dirs": P((list,)), "study_weights": P((dict,)), "run_dir": STR,
                       "recipe": P((str,), ("phase3", "sprint-fmri")), "model_config": OPT_STR, "init_from": OPT_STR,
                       "epochs": OPT_INT, "max_steps": OPT_INT, "overrides": P((list,)), "hold_out_subject": OPT_STR,
                       "pseudo_label": P((list,)), "pseudo_replace": BOOL, "pseudo_min_score": FLOAT,
                       "adapt_minutes": P((list,)), "adapt_steps": P((int,), above=0), "roi_head": BOOL,
                       "roi_epochs": P((int,), above=0), "resume": OPT_STR, "lazy": BOOL, "device": STR, **SESSION},
    "06_evaluate": {"study_dir": STR, "split": STR, "train_split": STR, "checkpoint": OPT_STR, "device": STR,
                    "ridge_iterations": INT, "ridge_bands": P((list, None)), "ridge_pooled": BOOL,
                    "low_level_bands": P((list,)), "detrend": P((str, None), DETRENDS),
                    "nan_policy": P((str,), ("error", "drop", "interpolate")), "out_dir": STR,
                    "ablation": P((dict,)), "stats_resamples": P((int,), above=9)},
    "07_predict_video": {"checkpoint": STR, "media": STR, "out_dir": STR, "cache_dir": STR, "tr_s": OPT_FLOAT,
                         "subject": STR, "space": OPT_STR, "formats": P((list,)), "map_times": P((list, None)),
                         "movie": P((str, None), ("gif", "mp4", None)), "measured_study": OPT_STR,
                         "measured_subject": OPT_STR, "device": STR, "tinytribe_source": OPT_STR},
}

# names a Jupyter kernel defines by itself
_KERNEL = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _assigned(source: str) -> set[str]:
    """Names a cell assigns at its top level (an IPython magic makes it unparsable: none)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _parameter_cells_names(namespace: dict[str, Any], schema: dict[str, P]) -> set[str] | None:
    """In a Jupyter kernel, the names assigned by the cells run just before this check, back to the
    parameters cell (the one assigning most of the schema): the parameters, papermill's injected ones,
    and a typo typed into the cell -- not what an earlier "Run all" in the same kernel left behind.
    None outside a kernel (every global is then a candidate)."""
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return None
    names: set[str] = set()
    for source in reversed(history[:-1]):   # In[-1] is this cell
        found = _assigned(source)
        names |= found
        if len(found & set(schema)) >= max(1, len(schema) // 2):
            return names
    return None


def _type_ok(value: Any, types: tuple) -> bool:
    for t in types:
        if t is None and value is None:
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t not in (None, float, int) and isinstance(value, t):
            return True
    return False


def _type_names(types: tuple) -> str:
    return " or ".join("None" if t is None else "a number" if t is float else t.__name__ for t in types)


def check_parameters(notebook: str, namespace: dict[str, Any]) -> None:
    """Refuse unknown parameter names, wrong types and unknown choices in a notebook's namespace.

    Args:
        notebook: the notebook's name (``"01_extract_features"``).
        namespace: its ``globals()`` right after the parameters (and papermill's injected) cell.

    Raises:
        ConfigError: one line naming the parameter, what it got, and what is allowed.
    """
    if notebook not in SCHEMAS:
        raise ConfigError(f"no parameter schema for notebook {notebook!r} (known: {', '.join(SCHEMAS)})")
    schema = SCHEMAS[notebook]
    given = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in _KERNEL
             and not callable(v) and type(v).__name__ != "module"}
    recent = _parameter_cells_names(namespace, schema)
    unknown = sorted(k for k in set(given) - set(schema) if recent is None or k in recent)
    if unknown:
        near = difflib.get_close_matches(unknown[0], schema, n=1)
        raise ConfigError(f"{notebook}: unknown parameter {unknown[0]!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                          + f"; parameters: {', '.join(schema)}")
    for name, spec in schema.items():
        if name not in namespace:
            continue
        value = namespace[name]
        if not _type_ok(value, spec.types):
            raise ConfigError(f"{notebook}: parameter {name} must be {_type_names(spec.types)}, got {value!r}")
        if spec.above is not None and value is not None and not value > spec.above:
            raise ConfigError(f"{notebook}: parameter {name} must be > {spec.above:g}, got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{notebook}: parameter {name} is {value!r}; choose from "
                              f"{', '.join(repr(c) for c in spec.choices)}")
