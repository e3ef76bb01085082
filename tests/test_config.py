"""Typed configs: unknown keys and wrong types are errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from tinytribe.config import ConfigError, apply_overrides, from_dict, load_json_config, to_dict


@dataclass
class Inner:
    n_experts: int = 8
    dropout: float = 0.1


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    space: Literal["fsaverage5", "fsaverage4"] = "fsaverage4"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    temperature: float | None = None


def test_from_dict_builds_nested_and_refuses_unknown():
    o = from_dict(Outer, {"name": "x", "inner": {"n_experts": 4}, "layers": [3]})
    assert o.inner == Inner(n_experts=4) and o.layers == [3]
    with pytest.raises(ConfigError, match=r"Outer\.inner: unknown key 'n_expert' \(known: n_experts, dropout\)"):
        from_dict(Outer, {"name": "x", "inner": {"n_expert": 4}})
    with pytest.raises(ConfigError, match=r"Outer\.inner\.n_experts: expected an integer, got '4'"):
        from_dict(Outer, {"name": "x", "inner": {"n_experts": "4"}})
    with pytest.raises(ConfigError, match=r"Outer\.space: 'mni' is not one of"):
        from_dict(Outer, {"name": "x", "space": "mni"})
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        from_dict(Outer, {})
    assert from_dict(Outer, {"name": "x", "inner": {"dropout": 0}}).inner.dropout == 0.0  # ints widen to float


def test_overrides():
    o = from_dict(Outer, {"name": "x"})
    o2 = apply_overrides(o, ["--model.inner.n_experts=4", "temperature=2.0", "layers=[1,2,3]"], prefix="model.")
    assert (o2.inner.n_experts, o2.temperature, o2.layers) == (4, 2.0, [1, 2, 3])
    assert o.inner.n_experts == 8  # the original is untouched
    with pytest.raises(ConfigError, match="unknown key 'n_exprts'"):
        apply_overrides(o, ["inner.n_exprts=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(o, ["inner.n_experts"])
    assert to_dict(o2)["inner"] == {"n_experts": 4, "dropout": 0.1}


def test_json_config_errors_name_the_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"name": "x", "inner": {"n_experts": 2}}')
    assert load_json_config(Outer, p).inner.n_experts == 2
    p.write_text('{"name": "x",')
    with pytest.raises(ConfigError, match="c.json: not valid JSON"):
        load_json_config(Outer, p)
    p.write_text('{"name": "x", "bogus": 1}')
    with pytest.raises(ConfigError, match="c.json: unknown key 'bogus'"):
        load_json_config(Outer, p)
