"""Notebook parameters are checked before any work: unknown names, wrong types, unknown choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinytribe.config import ConfigError
from tinytribe.notebook_params import SCHEMAS, check_parameters

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


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


def test_what_is_refused_and_how():
    ns = _defaults("01_extract_features")
    with pytest.raises(ConfigError, match=r"unknown parameter 'chunk_size' \(did you mean 'chunk_s'\?\); parameters: media_dir"):
        check_parameters("01_extract_features", ns | {"chunk_size": 5})
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


def test_in_a_kernel_only_the_cells_before_the_check_count(tmp_path):
    import jupytext

    nb = jupytext.read(NOTEBOOKS / "04_phase2_kd.py")
    params = next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    kernel = _defaults("04_phase2_kd")
    check = 'check_parameters("04_phase2_kd", globals())'
    # a second "Run all" in one kernel: the first run's later variables are still there, not parameters
    kernel |= {"run_root": "runs/phase2", "result": 3, "In": ["", params, "x = 1\nrun_root = 2", check, params, check]}
    check_parameters("04_phase2_kd", kernel)
    # a typo fixed since the first run is no longer refused ...
    kernel |= {"chunk_size": 5, "In": ["", params + "\nchunk_size = 5", check, params, check]}
    check_parameters("04_phase2_kd", kernel)
    # ... and a typo typed into the parameters cell now, or injected by papermill, is
    with pytest.raises(ConfigError, match="unknown parameter 'max_step'"):
        check_parameters("04_phase2_kd", kernel | {"max_step": 5, "In": ["", params + "\nmax_step = 5", check]})
    with pytest.raises(ConfigError, match="unknown parameter 'max_step'"):
        check_parameters("04_phase2_kd", kernel | {"max_step": 5, "In": ["", params, "# Parameters\nmax_step = 5", check]})
