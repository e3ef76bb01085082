"""Notebooks as steps of a job: papermill execution, the main job on the demo, reuse and progress.

    tinytribe demo --out runs/demo            # the whole pipeline on the embedded demo
    tinytribe demo --out runs/demo            # again: every finished step is reused (seconds)
    tinytribe demo --out runs/demo --force    # every step redone from empty outputs

A :class:`Step` executes one notebook with papermill, with the output folder as its working directory
(every path in its parameters is relative, so the folder can be moved). ``pipeline.json`` in that folder
records each step's *key*: a hash of this package's code, the notebook, its parameters and the keys of
the steps it reads. A step is reused when it finished with the same key and its files are still there.
A finished step whose key changed (or whose files are gone, or a step it reads was made again since
it ran) is redone from empty outputs, and ``force`` redoes every step; a step that was interrupted (a killed session,
Ctrl-C) is run again over what it left, and its notebook resumes from its manifests and ``last.pt``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tinytribe._io import atomic_write_json, sha256_file
from tinytribe.progress import Progress, StepProgress, clock
from tinytribe.resources import notebooks_dir

STATE_FILE = "pipeline.json"
LOCK_FILE = ".pipeline.lock"
STATE_FORMAT = {"format": "tinytribe.pipeline", "format_version": 1}   # docs/FORMATS.md, section 7
# the kernels' own log (ipykernel's "Kernel is running over TCP without encryption", its ZMQ tracebacks
# on Ctrl-C) stays out of the terminal; what the notebook's code prints or warns is in the executed copy,
# and a kernel that dies is reported by nbclient (DeadKernelError)
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


def notebook_path(name: str) -> Path:
    src = notebooks_dir() / f"{name}.ipynb"
    if not src.is_file():
        known = ", ".join(sorted(p.stem for p in notebooks_dir().glob("*.ipynb")))
        raise ValueError(f"{src}: no such notebook (known: {known})")
    return src


def run_notebook(name: str, out_dir: str | Path, parameters: dict | None = None, *,
                 cwd: str | Path | None = None, timeout_s: int = 1800, copy_name: str | None = None,
                 progress: StepProgress | None = None) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill; the executed copy goes to ``out_dir``.

    Args:
        copy_name: the executed copy's file name without ``.ipynb`` (default ``name``).
        progress: told which cell and section runs (the terminal display of :func:`run_steps`).
    """
    import papermill

    src = notebook_path(name)
    out = Path(out_dir) / f"{copy_name or name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = {}
    if progress is not None:
        engine = {"engine_name": _progress_engine(), "progress": progress}
    papermill.execute_notebook(str(src), str(out), parameters=parameters or {}, cwd=str(cwd or Path.cwd()),
                               kernel_name="python3", progress_bar=False, execution_timeout=timeout_s,
                               extra_arguments=KERNEL_ARGUMENTS, **engine)
    return out


def _progress_engine() -> str:
    """Register (once) a papermill engine that reports each cell to a :class:`StepProgress`."""
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.exceptions import PapermillException

    name = "tinytribe-progress"
    with contextlib.suppress(PapermillException):
        papermill_engines.get_engine(name)
        return name

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress: StepProgress | None = None, **kwargs):
            if progress is not None:
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    progress.cell(cell, cell_index, len(nb_man.nb.cells))
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(name, ProgressEngine)
    return name


@dataclass(frozen=True)
class Step:
    """One notebook run of a job.

    Attributes:
        name: its key in ``pipeline.json`` and the executed copy's name (``notebooks/<name>.ipynb``).
        notebook: the notebook it executes.
        title: what it does, for the display.
        parameters: the notebook's parameters (paths relative to the output folder).
        outputs: the folders it writes, relative to the output folder (removed before it is redone).
        needs: the steps whose outputs it reads (a redone one makes this one redo too).
        runs_inside: notebooks this notebook runs itself (part of its key, like its own file) ...
        inside_copies: ... and the folder (relative) where it leaves their executed copies, which are
            then copied beside the others.
    """

    name: str
    notebook: str
    title: str
    parameters: dict
    outputs: tuple[str, ...]
    needs: tuple[str, ...] = ()
    runs_inside: tuple[str, ...] = ()
    inside_copies: str | None = None


def demo_steps(*, seed: int = 0, device: str = "auto", phase1_epochs: int = 3, epochs: int | None = 30) -> list[Step]:
    """The main job: the whole pipeline on the embedded demo study, with the design's ablation.

    00 plans and probes the bundled media; 00_demo_study builds the study (its stimuli, features through
    01, simulated subjects, the demo teacher through 02); Phase 1 briefly; Phase 2 from random init and
    from Phase 1; Phase 3 from each of those (the first also adapts the held-out subject and fits an ROI
    head) and from random init; 06 scores all four against the ridge and the teacher; 07 predicts a clip.

    Args:
        epochs: Phase 2's and Phase 3's (None: their recipes' 10, which leave the demo's students far
            below the ridge: Phase 2 → 3 at mean r 0.070 against 0.150 after 30, ridge 0.156).
    """
    seeded = [f"loop.seed={seed}"]
    long = {} if epochs is None else {"epochs": epochs}   # Phase 2's and 3's (None: their recipes')
    studies = ["demo_study", "demo_stories"]
    no_extras = {"adapt_minutes": [], "roi_head": False}
    return [
        Step("00_setup_and_plan", "00_setup_and_plan", "doctor, a resumable probe of the bundled media, the plan",
             {"run_dir": "setup"}, ("setup",)),
        Step("00_demo_study", "00_demo_study", "the demo study: stimuli, 01 features, subjects, 02 demo teacher",
             {"root": "demo_study", "stories_root": "demo_stories", "seed": seed, "device": device},
             ("demo_study", "demo_stories"), runs_inside=("01_extract_features", "02_teacher_inference"),
             inside_copies="demo_study/notebooks"),
        Step("03_phase1_selfsup", "03_phase1_selfsup", "Phase 1: self-supervised pre-training (briefly)",
             {"study_dirs": ["demo_study"], "run_dir": "phase1", "epochs": phase1_epochs, "overrides": seeded,
              "device": device}, ("phase1",), needs=("00_demo_study",)),
        Step("04_phase2_kd", "04_phase2_kd", "Phase 2: distil the teacher, from random init",
             {"study_dirs": ["demo_study"], "run_dir": "phase2", "overrides": seeded, "device": device, **long},
             ("phase2",), needs=("00_demo_study",)),
        Step("04_phase2_kd-from-phase1", "04_phase2_kd", "Phase 2: distil the teacher, from Phase 1",
             {"study_dirs": ["demo_study"], "run_dir": "phase1_2", "init_from": "phase1/checkpoints/best.pt",
              "overrides": seeded, "device": device, **long}, ("phase1_2",), needs=("00_demo_study", "03_phase1_selfsup")),
        Step("05_phase3_fmri", "05_phase3_fmri", "Phase 3: fMRI from Phase 2, adapt sub-04, an ROI head",
             {"study_dirs": studies, "run_dir": "phase3", "init_from": "phase2/checkpoints/best.pt",
              "overrides": seeded, "device": device, **long}, ("phase3",), needs=("00_demo_study", "04_phase2_kd")),
        Step("05_phase3_fmri-alone", "05_phase3_fmri", "Phase 3 alone: fMRI from random init",
             {"study_dirs": studies, "run_dir": "phase3_alone", "init_from": None, "pseudo_label": [],
              "overrides": seeded, "device": device, **no_extras, **long}, ("phase3_alone",), needs=("00_demo_study",)),
        Step("05_phase3_fmri-from-phase1", "05_phase3_fmri", "Phase 3: fMRI from Phase 1 → 2",
             {"study_dirs": studies, "run_dir": "phase1_2_3", "init_from": "phase1_2/checkpoints/best.pt",
              "overrides": seeded, "device": device, **no_extras, **long}, ("phase1_2_3",),
             needs=("00_demo_study", "04_phase2_kd-from-phase1")),
        Step("06_evaluate", "06_evaluate", "evaluate: the ablation, statistics, the HTML report",
             {"study_dir": "demo_study", "out_dir": "evaluate", "checkpoint": "phase3/checkpoints/best.pt",
              "device": device,
              "ablation": {"Phase 3 alone": "phase3_alone/checkpoints/best.pt",
                           "Phase 2 alone": "phase2/checkpoints/best.pt",
                           "Phase 2 → 3": "phase3/checkpoints/best.pt",
                           "Phase 1 → 2 → 3": "phase1_2_3/checkpoints/best.pt"}},
             ("evaluate",), needs=("00_demo_study", "04_phase2_kd", "05_phase3_fmri", "05_phase3_fmri-alone",
                                   "05_phase3_fmri-from-phase1")),
        Step("07_predict_video", "07_predict_video", "predict a demo clip: maps, time courses, a brain movie",
             {"checkpoint": "phase3/checkpoints/best.pt", "media": "demo_study/stimuli/test01.mp4",
              "out_dir": "predict", "cache_dir": "predict/features", "measured_study": "demo_study",
              "device": device}, ("predict",), needs=("00_demo_study", "05_phase3_fmri")),
    ]


class StepFailed(RuntimeError):
    """A step's notebook stopped (the cause is papermill's or nbclient's error); it is recorded as failed."""

    def __init__(self, step: Step, copy: Path):
        super().__init__(f"step {step.name} failed (executed copy: {copy})")
        self.step, self.copy = step, copy


@dataclass
class StepRecord:
    name: str
    title: str
    status: str          # "reused", "done"
    seconds: float       # this run's (a reused step: the run that made it)


@dataclass
class PipelineReport:
    out_dir: Path
    steps: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        ran = [s for s in self.steps if s.status == "done"]
        return (f"{len(ran)} steps run, {len(self.steps) - len(ran)} reused, in {clock(self.seconds)} "
                f"({self.out_dir})")


CODE_FILES = ("**/*.py", "model/configs/*.json", "assets/**/*")   # the package's modules and data files


def package_digest() -> str:
    """A hash of the installed ``tinytribe`` package (its modules and data files, not editor backups or
    caches): a step made by other code is not reused."""
    root = Path(__file__).resolve().parent
    files = {f for pattern in CODE_FILES for f in root.glob(pattern)
             if f.is_file() and not {"__pycache__", "_bundled"} & set(f.relative_to(root).parts)}
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()[:16]


def _step_key(step: Step, keys: dict[str, str], code: str) -> str:
    blob = json.dumps({"code": code, "parameters": step.parameters, "needs": {n: keys[n] for n in step.needs},
                       "notebooks": {n: sha256_file(notebook_path(n)) for n in (step.notebook, *step.runs_inside)}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_steps(steps: list[Step]) -> None:
    """Refuse, naming the step, what would make a job unsafe to reuse or to redo.

    Raises:
        ValueError: a repeated name; a need on no earlier step; an output that is absolute, leaves the
            output folder, is the folder itself or its ``notebooks/`` or ``pipeline.json``, or overlaps
            another step's; parameters JSON cannot hold (papermill passes them as JSON).
    """
    seen: dict[str, Step] = {}
    owner: dict[str, str] = {}
    for step in steps:
        if step.name in seen:
            raise ValueError(f"step {step.name}: two steps have this name")
        missing = [n for n in step.needs if n not in seen]
        if missing:
            raise ValueError(f"step {step.name}: needs {', '.join(missing)}, which no earlier step makes")
        try:
            json.dumps(step.parameters, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"step {step.name}: parameters must be plain JSON values (strings, not paths; "
                             f"no NaN): {e}") from None
        for o in step.outputs:
            parts = Path(o).parts
            if Path(o).is_absolute() or not parts or ".." in parts or parts[0] in (".", "notebooks", STATE_FILE,
                                                                                        LOCK_FILE):
                raise ValueError(f"step {step.name}: output {o!r} must be a folder inside the output folder "
                                 f"(not absolute, '..', '.', 'notebooks', {STATE_FILE} or {LOCK_FILE})")
            norm = Path(*parts).as_posix()
            for other, name in owner.items():
                if norm == other or norm.startswith(other + "/") or other.startswith(norm + "/"):
                    raise ValueError(f"step {step.name}: output {o!r} overlaps {other!r} of step {name}")
            owner[norm] = step.name
        inside = Path(step.inside_copies or ".").as_posix()
        if step.runs_inside and not any(inside == o or inside.startswith(o + "/") for o in step.outputs):
            raise ValueError(f"step {step.name}: inside_copies {step.inside_copies!r} must be in one of its outputs")
        seen[step.name] = step


def _load_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        return {**STATE_FORMAT, "steps": {}}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); run with --force to start over (every step redone)")
    if {k: state.get(k) for k in STATE_FORMAT} != STATE_FORMAT:
        raise ValueError(f"{path}: not a {STATE_FORMAT['format']} version {STATE_FORMAT['format_version']} file "
                         f"(format {state.get('format')!r}, version {state.get('format_version')!r}); run with "
                         f"--force to start over (every step redone)")
    return state


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One job at a time in an output folder (an advisory lock, released when the process ends)."""
    try:
        import fcntl
    except ImportError:   # Windows: no lock
        yield
        return
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ValueError(f"{out}: another job is running in this folder (pid {f.read().strip() or '?'})") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def run_steps(steps: list[Step], out_dir: str | Path, *, force: bool = False, stream: TextIO | None = None,
              timeout_s: int = 1800) -> PipelineReport:
    """Run (or reuse) each step in order; the executed copies go to ``out_dir/notebooks/``.

    A step is reused when ``pipeline.json`` records it done with the same key (this package's code, its
    notebooks, its parameters, the keys of its needs), every file it left is still there, and its needs are
    still the runs it read (each run of a step has an id; a need made again since, in this job or in an
    interrupted one, is new input). Otherwise it runs: from empty outputs when it had finished, or its key
    or inputs changed; over its outputs when it was interrupted or failed with the same key and inputs
    (its notebook resumes). ``force`` first removes every step's outputs and record (an unreadable
    ``pipeline.json`` too), so an interrupted forced run goes on forced.

    Raises:
        StepFailed: from papermill's or nbclient's error (a cell failed, a dead kernel, a timeout). The step
            is recorded as failed (so is one stopped by Ctrl-C); the next run starts it again over its outputs.
        ValueError: see :func:`check_steps`; the output folder is the source tree; another job holds it; a
            step's outputs exist but ``pipeline.json`` has no record of it (made by something else: nothing
            is deleted, checked before any step runs); an output could not be removed for a redo.
    """
    check_steps(steps)
    out = Path(out_dir).resolve()
    if (out / "notebooks").resolve() == notebooks_dir().resolve():
        raise ValueError(f"{out}: is the source tree (its notebooks/ are the notebooks this job runs); "
                         f"choose another output folder, such as {out / 'runs' / 'demo'}")
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _run_locked(steps, out, force=force, stream=stream or sys.stderr, timeout_s=timeout_s)


def _run_locked(steps: list[Step], out: Path, *, force: bool, stream: TextIO, timeout_s: int) -> PipelineReport:
    executed = out / "notebooks"
    if force:   # every output and record goes first, so an interrupted forced job goes on forced
        try:
            state = _load_state(out)
        except ValueError:   # an unreadable state file: start over
            state = {**STATE_FORMAT, "steps": {}}
        for step in steps:
            _clear(out, step)
            state["steps"].pop(step.name, None)
        atomic_write_json(out / STATE_FILE, state)
    state = _load_state(out)
    for step in steps:   # before any work: outputs nobody recorded are not this job's to overwrite
        made = [o for o in step.outputs if (out / o).exists()]
        if step.name not in state["steps"] and made:
            raise ValueError(f"{out / made[0]}: exists, but {out / STATE_FILE} has no record of step {step.name} "
                             f"making it; move it away, or run with --force to replace it")
    display = Progress(len(steps), stream)
    report = PipelineReport(out)
    code = package_digest()
    keys: dict[str, str] = {}
    started = time.monotonic()
    for i, step in enumerate(steps, 1):
        key = keys[step.name] = _step_key(step, keys, code)
        rec = state["steps"].get(step.name)
        copy = executed / f"{step.name}.ipynb"
        # the runs of its needs it would read: a need made again since (in this job or an interrupted one) is new input
        inputs = {n: state["steps"][n].get("run") for n in step.needs}
        if rec is not None:
            same = rec["key"] == key and rec.get("inputs") == inputs
            if (same and rec["status"] == "done" and copy.is_file()
                    and all((out / f).exists() for f in rec.get("files", []))):
                display.reused(i, step, rec)
                report.steps.append(StepRecord(step.name, step.title, "reused", rec["seconds"]))
                continue
            if rec["status"] == "done" or not same:   # a redo starts from empty outputs
                _clear(out, step)
        state["steps"][step.name] = {"key": key, "status": "running", "run": uuid.uuid4().hex[:12],
                                     "inputs": inputs, "notebook": step.notebook, "parameters": step.parameters,
                                     "started": _now()}
        atomic_write_json(out / STATE_FILE, state)
        t0 = time.monotonic()
        with display.step(i, step) as progress:
            try:
                run_notebook(step.notebook, executed, step.parameters, cwd=out, timeout_s=timeout_s,
                             copy_name=step.name, progress=progress)
            except BaseException as e:
                state["steps"][step.name]["status"] = "failed"
                atomic_write_json(out / STATE_FILE, state)
                if isinstance(e, Exception):
                    raise StepFailed(step, copy) from e
                raise
        for name in step.runs_inside:   # the executed copies it made of the notebooks it ran
            inner = out / (step.inside_copies or "") / f"{name}.ipynb"
            if inner.is_file():
                shutil.copy2(inner, executed / inner.name)
        seconds = time.monotonic() - t0
        state["steps"][step.name].update(status="done", seconds=round(seconds, 1), finished=_now(),
                                         files=_files(out, step.outputs))
        atomic_write_json(out / STATE_FILE, state)
        report.steps.append(StepRecord(step.name, step.title, "done", seconds))
    report.seconds = time.monotonic() - started
    return report


def _clear(out: Path, step: Step) -> None:
    for o in step.outputs:
        if (out / o).exists():
            try:
                shutil.rmtree(out / o)
            except OSError as e:   # "from empty outputs" must be true, or the step does not start
                raise ValueError(f"{out / o}: could not be removed to redo step {step.name}: {e}") from None
    (out / "notebooks" / f"{step.name}.ipynb").unlink(missing_ok=True)
    for name in step.runs_inside:
        (out / "notebooks" / f"{name}.ipynb").unlink(missing_ok=True)


def _files(out: Path, outputs: tuple[str, ...]) -> list[str]:
    """Every file a step left in its outputs (relative paths): a reused step must still have them all."""
    return sorted(str(f.relative_to(out)) for o in outputs for f in (out / o).rglob("*") if f.is_file())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
