"""The main job's machinery: steps reused, redone and resumed by key; the progress display; the demo's
step list against each notebook's parameter schema. Real notebooks (the fast 00_setup_and_plan) run."""

from __future__ import annotations

import io
import json
import re
import shutil

import pytest

from tinytribe import cli, pipeline
from tinytribe.notebook_params import check_parameters
from tinytribe.pipeline import Step, StepFailed, demo_steps, run_steps

pytestmark = pytest.mark.notebook


def _steps(chunk_a: float = 6.0, chunk_b: float = 6.0) -> list[Step]:
    return [Step("a", "00_setup_and_plan", "probe a", {"run_dir": "a", "chunk_s": chunk_a}, ("a",)),
            Step("b", "00_setup_and_plan", "probe b", {"run_dir": "b", "chunk_s": chunk_b}, ("b",), needs=("a",))]


def _state(out) -> dict:
    return json.loads((out / "pipeline.json").read_text())["steps"]


def test_steps_run_once_then_are_reused_and_a_changed_step_redoes_what_reads_it(tmp_path):
    out = tmp_path / "job"
    first = run_steps(_steps(), out, stream=io.StringIO())
    assert [s.status for s in first.steps] == ["done", "done"]
    assert (out / "a" / "manifest.json").is_file() and (out / "notebooks" / "b.ipynb").is_file()
    assert {k: v["status"] for k, v in _state(out).items()} == {"a": "done", "b": "done"}
    stamp = (out / "notebooks" / "a.ipynb").stat().st_mtime_ns

    again = run_steps(_steps(), out, stream=io.StringIO())
    assert [s.status for s in again.steps] == ["reused", "reused"] and again.seconds < 2.0
    assert (out / "notebooks" / "a.ipynb").stat().st_mtime_ns == stamp

    (out / "b" / "left-over").write_text("from the old parameters")
    changed = run_steps(_steps(chunk_b=4.0), out, stream=io.StringIO())
    assert [s.status for s in changed.steps] == ["reused", "done"]
    assert not (out / "b" / "left-over").exists()    # a redo starts from empty outputs

    upstream = run_steps(_steps(chunk_a=4.0, chunk_b=4.0), out, stream=io.StringIO())
    assert [s.status for s in upstream.steps] == ["done", "done"]   # b reads a: it is redone too

    (out / "a" / "left-over").write_text("x")
    forced = run_steps(_steps(chunk_a=4.0, chunk_b=4.0), out, force=True, stream=io.StringIO())
    assert [s.status for s in forced.steps] == ["done", "done"] and not (out / "a" / "left-over").exists()

    (out / "b" / "manifest.json").unlink()   # an output gone: the step runs again
    assert [s.status for s in run_steps(_steps(chunk_a=4.0, chunk_b=4.0), out, stream=io.StringIO()).steps] == [
        "reused", "done"]
    (out / "a" / "manifest.json").unlink()   # and what reads it too: its outputs were made again
    assert [s.status for s in run_steps(_steps(chunk_a=4.0, chunk_b=4.0), out, stream=io.StringIO()).steps] == [
        "done", "done"]


def test_an_interrupted_step_resumes_over_its_outputs(tmp_path):
    out = tmp_path / "job"
    run_steps(_steps(), out, stream=io.StringIO())
    state = json.loads((out / "pipeline.json").read_text())
    state["steps"]["b"]["status"] = "running"   # what a session killed inside step b leaves
    (out / "pipeline.json").write_text(json.dumps(state))
    (out / "b" / "kept").write_text("work of the killed session")
    report = run_steps(_steps(), out, stream=io.StringIO())
    assert [s.status for s in report.steps] == ["reused", "done"] and (out / "b" / "kept").is_file()
    nb = json.loads((out / "notebooks" / "b.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "0 items done this session" in text   # its manifest was kept: nothing left to redo


def test_a_changed_notebook_or_package_redoes_its_steps(tmp_path, monkeypatch):
    books = tmp_path / "books"
    shutil.copytree(pipeline.notebooks_dir(), books)
    monkeypatch.setattr(pipeline, "notebooks_dir", lambda: books)
    out = tmp_path / "job"
    run_steps(_steps(), out, stream=io.StringIO())
    nb = json.loads((books / "00_setup_and_plan.ipynb").read_text())
    nb["metadata"]["edited"] = True
    (books / "00_setup_and_plan.ipynb").write_text(json.dumps(nb))
    assert [s.status for s in run_steps(_steps(), out, stream=io.StringIO()).steps] == ["done", "done"]
    monkeypatch.setattr(pipeline, "package_digest", lambda: "other code")
    assert [s.status for s in run_steps(_steps(), out, stream=io.StringIO()).steps] == ["done", "done"]

    inner = Step("s", "00_setup_and_plan", "s", {}, ("s",), runs_inside=("02_teacher_inference",))
    before = pipeline._step_key(inner, {}, "c")
    (books / "02_teacher_inference.ipynb").write_text((books / "02_teacher_inference.ipynb").read_text() + " ")
    assert pipeline._step_key(inner, {}, "c") != before   # a notebook it runs inside is part of its key


def test_a_step_made_again_by_an_interrupted_job_still_redoes_what_reads_it(tmp_path):
    out = tmp_path / "job"
    a, b = _steps()
    x = Step("x", "00_setup_and_plan", "probe x", {"run_dir": "x"}, ("x",))
    run_steps([a, x, b], out, stream=io.StringIO())
    (out / "a" / "manifest.json").unlink()   # a is made again ...
    bad_x = Step("x", "00_setup_and_plan", "probe x", {"run_dir": "x", "chunk_s": "six"}, ("x",))
    with pytest.raises(StepFailed):          # ... and the job stops before b
        run_steps([a, bad_x, b], out, stream=io.StringIO())
    assert [s.status for s in run_steps([a, x, b], out, stream=io.StringIO()).steps] == ["reused", "done", "done"]


def test_force_is_kept_by_a_run_it_was_interrupted_in(tmp_path):
    out = tmp_path / "job"
    three = [*_steps(), Step("c", "00_setup_and_plan", "probe c", {"run_dir": "c"}, ("c",))]
    run_steps(three, out, stream=io.StringIO())
    bad_b = [three[0], Step("b", "00_setup_and_plan", "b", {"run_dir": "b", "chunk_s": "six"}, ("b",), needs=("a",)),
             three[2]]
    with pytest.raises(StepFailed):
        run_steps(bad_b, out, force=True, stream=io.StringIO())
    assert not (out / "c").exists()   # forced: c's old outputs are gone with its record
    assert [s.status for s in run_steps(three, out, stream=io.StringIO()).steps] == ["reused", "done", "done"]


def test_outputs_nobody_recorded_are_refused_not_deleted(tmp_path):
    out = tmp_path / "job"
    (out / "b").mkdir(parents=True)
    (out / "b" / "mine.txt").write_text("made by hand")
    with pytest.raises(ValueError, match=r"job/b: exists, but .*pipeline.json has no record of step b"):
        run_steps(_steps(), out, stream=io.StringIO())
    assert (out / "b" / "mine.txt").is_file() and not (out / "a").exists()   # refused before any step ran
    assert [s.status for s in run_steps(_steps(), out, force=True, stream=io.StringIO()).steps] == ["done", "done"]


def test_unsafe_steps_and_a_busy_folder_are_refused(tmp_path):
    def step(name, outputs, **kw):
        return Step(name, "00_setup_and_plan", name, kw.pop("parameters", {}), outputs, **kw)

    for steps, why in [([step("a", ("x",)), step("a", ("y",))], "two steps have this name"),
                       ([step("a", ("x",), needs=("z",))], "needs z, which no earlier step makes"),
                       ([step("a", ("/abs",))], "must be a folder inside"),
                       ([step("a", ("../up",))], "must be a folder inside"),
                       ([step("a", ("notebooks",))], "must be a folder inside"),
                       ([step("a", ("x",)), step("b", ("x/y",))], "overlaps 'x' of step a"),
                       ([step("a", ("x",), parameters={"p": tmp_path})], "parameters must be plain JSON"),
                       ([step("a", ("x",), parameters={"p": float("nan")})], "parameters must be plain JSON")]:
        with pytest.raises(ValueError, match=why):
            run_steps(steps, tmp_path / "job", stream=io.StringIO())
    import fcntl

    (tmp_path / "job").mkdir(exist_ok=True)
    with open(tmp_path / "job" / ".pipeline.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another job is running in this folder"):
            run_steps(_steps(), tmp_path / "job", stream=io.StringIO())


def test_ctrl_c_records_the_step_and_the_command_says_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_steps(_steps(), tmp_path / "job", stream=io.StringIO())
    assert _state(tmp_path / "job")["a"]["status"] == "failed"
    monkeypatch.setattr(pipeline, "demo_steps", lambda **kw: _steps())
    assert cli.main(["demo", "--out", str(tmp_path / "job")]) == 130
    assert "interrupted; the same command resumes" in capsys.readouterr().err


def test_a_failing_step_is_recorded_and_named(tmp_path):
    out = tmp_path / "job"
    bad = [Step("a", "00_setup_and_plan", "probe a", {"run_dir": "a", "chunk_s": "six"}, ("a",))]
    with pytest.raises(StepFailed) as e:
        run_steps(bad, out, stream=io.StringIO())
    assert e.value.step.name == "a" and e.value.copy == out / "notebooks" / "a.ipynb"
    assert _state(out)["a"]["status"] == "failed"
    (out / "pipeline.json").write_text("{not json")
    with pytest.raises(ValueError, match="pipeline.json: not valid JSON .*; run with --force to start over"):
        run_steps(_steps(), out, stream=io.StringIO())
    assert [s.status for s in run_steps(_steps(), out, force=True, stream=io.StringIO()).steps] == ["done", "done"]


def test_the_source_tree_is_refused_as_the_output_folder(tmp_path):
    root = pipeline.notebooks_dir().parent
    before = sorted(p.name for p in pipeline.notebooks_dir().iterdir())
    with pytest.raises(ValueError, match="is the source tree"):
        run_steps(_steps(), root, force=True, stream=io.StringIO())
    assert sorted(p.name for p in pipeline.notebooks_dir().iterdir()) == before and not (root / "a").exists()


def test_the_demo_command_prints_one_line_for_a_failed_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "demo_steps", lambda **kw: [
        Step("00_setup_and_plan", "00_setup_and_plan", "probe", {"run_dir": "a", "chunk_s": "six"}, ("a",))])
    assert cli.main(["demo", "--out", str(tmp_path / "job")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("tinytribe: error: notebook 00_setup_and_plan failed in cell")
    assert "chunk_s" in err and "the same command resumes from there" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_step_section_cell_and_times(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.Progress, "refresh_s", 0.2)
    monkeypatch.setenv("COLUMNS", "400")
    log = io.StringIO()
    run_steps(_steps()[:1], tmp_path / "log", stream=log)
    lines = log.getvalue().splitlines()
    assert lines[0] == "[1/1] probe a ..." and "    1. The job manifest" in lines
    assert re.fullmatch(r"\[1/1\] probe a: done in \d+:\d\d \(total \d+:\d\d\)", lines[-1]), lines[-1]
    assert "\r" not in log.getvalue()   # a log file gets lines, not redraws

    term = _Terminal()
    run_steps(_steps()[:1], tmp_path / "tty", stream=term)
    redraws = [r for r in term.getvalue().split("\r\033[K") if r and not r.endswith("\n")]
    assert redraws, "no live line while the notebook ran"
    assert all(re.match(r"\[1/1\] probe a( · .+)? · \d+:\d\d · total \d+:\d\d$", r) for r in redraws), redraws
    assert any(" · cell " in r for r in redraws), redraws   # the cell it is in (once the first one started)
    assert term.getvalue().endswith("\n") and "done in" in term.getvalue().splitlines()[-1]

    again = io.StringIO()
    run_steps(_steps()[:1], tmp_path / "log", stream=again)
    assert "reused" in again.getvalue() and "--force redoes it" in again.getvalue()


def test_the_demo_steps_fit_their_notebooks_and_read_only_what_earlier_steps_make():
    steps = demo_steps(seed=3, device="cpu")
    made: dict[str, tuple[str, ...]] = {}
    for step in steps:
        check_parameters(step.notebook, step.parameters)   # names, types and choices as the notebook takes them
        assert set(step.needs) <= set(made), step.name
        for value in json.dumps(step.parameters).split('"'):   # every path into an earlier step's outputs ...
            first = value.split("/")[0]
            maker = next((n for n, outs in made.items() if first in outs), None)
            assert maker is None or maker in step.needs, (step.name, value, maker)   # ... is a need of this step
        made[step.name] = step.outputs
    names = [s.name for s in steps]
    assert len(set(names)) == len(names) and names[0] == "00_setup_and_plan" and names[-1] == "07_predict_video"
    ablation = next(s for s in steps if s.notebook == "06_evaluate").parameters["ablation"]
    assert sorted(ablation) == sorted(["Phase 3 alone", "Phase 2 alone", "Phase 2 → 3", "Phase 1 → 2 → 3"])
    assert all("loop.seed=3" in s.parameters["overrides"] for s in steps if "overrides" in s.parameters)
