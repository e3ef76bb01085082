"""The doctor cell: what this session is, and whether it can do the work, before any long job starts.

It prints a few lines -- platform and session time left, accelerator and the precision it will use,
free disk where caches and outputs go, which secrets are present (names only), a 1 KB round trip to
the sync remote, this account's quota this week and what the session plans to do -- and refuses to
start (:class:`DoctorError`) when something would waste the session.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tinytribe.budget import BudgetConfig, QuotaLedger, SessionBudget, detect_platform
from tinytribe.provenance import provenance

KAGGLE_OUTPUT = Path("/kaggle/working")
CACHE_VARS = ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME")


class DoctorError(RuntimeError):
    """The session should not start its long work; the message says why, in one line."""


def precision_for(capability: tuple[int, int] | None) -> str:
    """Training precision for a CUDA compute capability: bf16 on Ampere and newer (sm_80+), fp16 with
    loss scaling on older cards (T4 is sm_75, P100 sm_60), fp32 on the CPU (None)."""
    if capability is None:
        return "fp32 (CPU)"
    return "bf16" if capability >= (8, 0) else "fp16 with loss scaling"


def accelerator() -> tuple[str, str]:
    """(device description, precision) for this machine."""
    try:
        import torch
    except ImportError:
        return "no torch installed", precision_for(None)
    if not torch.cuda.is_available():
        return "CPU only", precision_for(None)
    cap = torch.cuda.get_device_capability()
    mem = torch.cuda.get_device_properties(0).total_memory / 2**30
    return f"{torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]}, {mem:.0f} GiB)", precision_for(cap)


def configure_caches(platform: str | None = None, home: Path | None = None) -> dict[str, str]:
    """Keep model caches out of Kaggle's saved output folder: on Kaggle, point unset cache variables
    at ``~/.cache`` (not saved, not counted in the 20 GB output). Returns the variables it set."""
    platform = platform or detect_platform()
    if platform != "kaggle":
        return {}
    base = (home or Path.home()) / ".cache"
    wanted = {"HF_HOME": base / "huggingface", "TORCH_HOME": base / "torch", "XDG_CACHE_HOME": base}
    set_now = {k: str(v) for k, v in wanted.items() if k not in os.environ}
    os.environ.update(set_now)
    return set_now


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = [f"  {line}" for line in self.lines] + [f"  PROBLEM: {p}" for p in self.problems]
        return "doctor:\n" + "\n".join(out)


def check(*, run_dir: str | Path, budget: SessionBudget, sync=None, ledger_path: str | Path | None = None,
          account: str = "default", planned: str | None = None, min_free_gb: float = 1.0,
          needs_gpu: bool = False, needs_secrets: dict[str, str] | None = None,
          config: BudgetConfig | None = None) -> Report:
    """Run every check and collect the lines and problems (prints nothing).

    Args:
        run_dir: where outputs go.
        budget: this session's budget.
        sync: a ``RunSync`` to the remote, or None when the run is not synced.
        ledger_path: the quota ledger beside the manifest.
        account: whose weekly quota this session uses.
        planned: a one-line description of what the session will do (items, hours).
        min_free_gb: refuse when less disk than this is free where outputs or caches go.
        needs_gpu: refuse on a machine without CUDA.
        needs_secrets: secrets the job cannot run without, by name, with why (refuse when one is missing).
    """
    from tinytribe import secrets

    config = config or BudgetConfig()
    platform = detect_platform()
    r = Report()
    prov = provenance()
    r.lines.append(f"tinytribe {prov['tinytribe_version']} (git {prov['git_revision'][:12]}) on {platform}; "
                   f"session: {budget.describe()}")
    if budget.left_s() <= budget.reserve_s:
        r.problems.append(f"the session has {max(budget.left_s(), 0) / 60:.0f} min left, no more than its reserve")

    device, precision = accelerator()
    r.lines.append(f"accelerator: {device}; precision: {precision}")
    if needs_gpu and device in ("CPU only", "no torch installed"):
        r.problems.append("this job needs a GPU: enable one in the notebook's settings (Kaggle: Accelerator)")

    places = {"outputs": Path(run_dir)}
    places["caches"] = Path(os.environ.get("HF_HOME") or Path.home() / ".cache")
    for name, path in places.items():
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 2**30
        r.lines.append(f"disk: {free:.1f} GiB free for {name} ({path})")
        if free < min_free_gb:
            r.problems.append(f"only {free:.1f} GiB free for {name} at {path} (need {min_free_gb:g})")
    if platform == "kaggle":
        inside = [v for v in CACHE_VARS if os.environ.get(v, "").startswith(str(KAGGLE_OUTPUT))]
        if inside:
            r.problems.append(f"{', '.join(inside)} point into {KAGGLE_OUTPUT}, Kaggle's saved 20 GB output: "
                              f"call tinytribe.doctor.configure_caches() or unset them")

    have = secrets.present()
    r.lines.append("secrets: " + ", ".join(f"{n} {'yes' if ok else 'no'}" for n, ok in have.items()))
    for name, why in (needs_secrets or {}).items():
        if not have.get(name, False) and not secrets.get_secret(name):
            r.problems.append(f"secret {name} is missing: {why}")

    if sync is None:
        r.lines.append("sync: none (outputs stay on this machine)")
    else:
        try:
            r.lines.append(f"sync: {sync.remote.description}, 1 KB round trip in {sync.round_trip():.2f} s")
        except Exception as e:
            r.problems.append(f"sync remote {sync.remote.description} failed a 1 KB round trip: {secrets.redact(str(e))}")

    if ledger_path is not None:
        ledger = QuotaLedger.load(ledger_path)
        used = ledger.gpu_hours(account, at=budget.clock(), week_starts=config.week_starts)
        limit = config.weekly_gpu_h(platform)
        r.lines.append(f"quota: {account!r} used {used:.1f} GPU-h this week" + (f" of {limit:g}" if limit else ""))
        if limit and needs_gpu and used >= limit:
            r.problems.append(f"{account!r} has used its {limit:g} GPU-h this week")
    if planned:
        r.lines.append(f"plan: {planned}")
    return r


def run(**kwargs) -> Report:
    """:func:`check`, print the report, and raise :class:`DoctorError` if it found a problem."""
    report = check(**kwargs)
    print(report.text())
    if report.problems:
        raise DoctorError("; ".join(report.problems))
    return report
