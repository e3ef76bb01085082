"""Notebook parameters are checked before any work: unknown names, wrong types, unknown choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinytribe.config import ConfigError
from tinytribe.notebook_params import SCHEMAS, check_parameters

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(autouse=True)
def fresh_kernel(monkeypatch):
    """Every check here is a notebook's first in its kernel (papermill starts a kernel per run)."""
    import tinytribe.notebook_params as P

    monkeypatch.setattr(P, "_FIRST", {})


def _defaults(name: str) -> dict:
    import jupytext

    cell = next(c for c in jupytext.read(NOTEBOOKS / f"{name}.py").cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, {}, namespace)
    return namespace


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py")))
def test_every_notebook_has_a_schema_matching_its_parameters_cell(name):
    assert name in SCHEMAS, f"{name}: add its parameters to tinytribe.notebook_params.SCHEMAS"
    defaults = _defaults(name)
    assert list(defaults) == list(SCHEMAS[name]) or set(defaults) == set(SCHEMAS[name]), \
        f"{name}: schema and parameters cell differ: {set(defaults) ^ set(SCHEMAS[name])}"
    check_parameters(name, defaults)   # the defaults pass their own schema
    source = (NOTEBOOKS / f"{name}.py").read_text()
    assert f'check_parameters("{name}", globals())' in source, f"{name} never checks its parameters"


def test_what_is_refused_and_how(monkeypatch):
    import tinytribe.notebook_params as P

    ns = _defaults("01_extract_features")
    with pytest.raises(ConfigError, match=r"unknown parameter 'chunk_size' \(did you mean 'chunk_s'\?\); parameters: media_dir"):
        check_parameters("01_extract_features", ns | {"chunk_size": 5})
    monkeypatch.setattr(P, "_FIRST", {})
    with pytest.raises(ConfigError, match="parameter chunk_s must be a number, got 'ten'"):
        check_parameters("01_extract_features", ns | {"chunk_s": "ten"})
    with pytest.raises(ConfigError, match="parameter video_backbone is 'mobilevit'; choose from 'efficientnet-lite0', 'mobilevit-s'"):
        check_parameters("01_extract_features", ns | {"video_backbone": "mobilevit"})
    with pytest.raises(ConfigError, match="parameter force_lock must be bool"):
        check_parameters("01_extract_features", ns | {"force_lock": 1})
    check_parameters("01_extract_features", ns | {"chunk_s": 30, "media_dir": "/data", "session_limit_s": None})
    import subprocess   # modules, functions and kernel names are not parameters
    check_parameters("01_extract_features", ns | {"subprocess": subprocess, "Path": Path, "In": [], "_": 1})
    with pytest.raises(ConfigError, match="parameter lease_s must be > 0, got 0"):
        check_parameters("01_extract_features", ns | {"lease_s": 0})
    with pytest.raises(ConfigError, match="no parameter schema for notebook '99_x'"):
        check_parameters("99_x", {})


@pytest.mark.notebook
def test_a_misspelled_parameter_stops_the_notebook_in_one_line(tmp_path, capsys):
    from tinytribe.cli import main

    rc = main(["notebooks", "04_phase2_kd", "--out", str(tmp_path), "-p", "max_step=5", "-p", f"run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "unknown parameter 'max_step' (did you mean 'max_steps'?)" in err
    assert not (tmp_path / "r").exists(), "no work started"


def test_a_second_run_in_the_same_kernel_is_not_refused_for_the_notebooks_own_variables(monkeypatch):
    import tinytribe.notebook_params as P

    monkeypatch.setattr(P, "_FIRST", {})
    kernel = _defaults("04_phase2_kd")
    check_parameters("04_phase2_kd", kernel)          # the first run
    kernel |= {"run_root": "runs/phase2", "result": 3}  # what its later cells left behind
    check_parameters("04_phase2_kd", kernel)          # "Run all" again
    kernel["max_step"] = 5                            # but a misspelled parameter given the first time is still refused
    monkeypatch.setattr(P, "_FIRST", {})
    with pytest.raises(ConfigError, match="unknown parameter 'max_step'"):
        check_parameters("04_phase2_kd", kernel)
