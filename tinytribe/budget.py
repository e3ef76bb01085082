"""Free-tier session budgets, weekly quota ledgers and the compute planner.

A Kaggle session is killed at its time limit, and Colab disconnects; work in flight is lost. Every
long loop therefore asks :meth:`SessionBudget.should_stop` before starting an item: it answers True
when the time left is less than one more item (estimated from the items measured so far) plus a
reserve for writing the checkpoint and syncing outputs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tinytribe._io import atomic_write_json
from tinytribe.config import from_dict, to_dict
from tinytribe.formats import FormatError

Platform = Literal["kaggle", "colab", "local"]


def detect_platform(environ: Mapping[str, str] | None = None) -> Platform:
    """``"kaggle"``, ``"colab"`` or ``"local"``, from the variables each platform sets."""
    env = os.environ if environ is None else environ
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env:
        return "kaggle"
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or (environ is None and "google.colab" in sys.modules):
        return "colab"
    return "local"


@dataclass
class BudgetConfig:
    """Session and weekly limits per platform (hours). ``None`` means unlimited.

    Kaggle allows 12 h sessions; the design plans 9 h, keeping a margin for start-up and sync.
    Kaggle's GPU quota is about 30 h a week per account (it floats; check your profile) and resets
    weekly; Colab's free tier disconnects after about 12 h or when idle.
    """

    kaggle_session_h: float | None = 9.0
    colab_session_h: float | None = 12.0
    local_session_h: float | None = None
    kaggle_weekly_gpu_h: float | None = 30.0
    colab_weekly_gpu_h: float | None = None
    local_weekly_gpu_h: float | None = None
    week_starts: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = "monday"
    reserve_s: float = 300.0

    def session_limit_s(self, platform: Platform) -> float | None:
        h = getattr(self, f"{platform}_session_h")
        return None if h is None else h * 3600.0

    def weekly_gpu_h(self, platform: Platform) -> float | None:
        return getattr(self, f"{platform}_weekly_gpu_h")


SESSION_START_ENV = "TINYTRIBE_SESSION_STARTED_AT"


def session_start_time(platform: Platform) -> float:
    """When this session began (Unix seconds): ``$TINYTRIBE_SESSION_STARTED_AT`` when set (a rehearsal
    of a platform on a machine that has been up for longer than its sessions last, or a platform whose
    first process is not the session); on Kaggle and Colab the container's first process (the session is
    the container); elsewhere this process.

    Raises:
        ValueError: the variable is set but is not a number of seconds.
    """
    import os

    import psutil

    if os.environ.get(SESSION_START_ENV):
        try:
            return float(os.environ[SESSION_START_ENV])
        except ValueError:
            raise ValueError(f"{SESSION_START_ENV}={os.environ[SESSION_START_ENV]!r}: expected Unix seconds") from None
    if platform in ("kaggle", "colab"):
        try:
            return psutil.Process(1).create_time()
        except (psutil.Error, OSError):
            pass
    return psutil.Process().create_time()


@dataclass
class SessionBudget:
    """Time left in this session and whether one more item fits.

    Args:
        limit_s: session length in seconds (None: unlimited).
        started_at: Unix time the session began.
        reserve_s: time kept back for the final checkpoint and sync.
        clock: time source (tests pass a fake one).
    """

    limit_s: float | None
    started_at: float
    reserve_s: float = 300.0
    clock: Callable[[], float] = time.time
    item_seconds: list[float] = field(default_factory=list)

    @classmethod
    def for_platform(cls, platform: Platform | None = None, config: BudgetConfig | None = None,
                     **overrides) -> "SessionBudget":
        """The budget of the current session, from the platform's limit and start time."""
        platform = platform or detect_platform()
        config = config or BudgetConfig()
        kw = dict(limit_s=config.session_limit_s(platform), started_at=session_start_time(platform),
                  reserve_s=config.reserve_s)
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def starting_now(cls, limit_s: float | None, reserve_s: float = 0.0,
                     clock: Callable[[], float] = time.time) -> "SessionBudget":
        return cls(limit_s=limit_s, started_at=clock(), reserve_s=reserve_s, clock=clock)

    def elapsed_s(self) -> float:
        return self.clock() - self.started_at

    def left_s(self) -> float:
        return float("inf") if self.limit_s is None else self.limit_s - self.elapsed_s()

    def record_item(self, seconds: float) -> None:
        """Add a measured item time to the estimate."""
        self.item_seconds.append(float(seconds))

    def item_estimate_s(self) -> float:
        """Expected time of the next item: the slowest of the last five measured (0 before any)."""
        return max(self.item_seconds[-5:], default=0.0)

    def should_stop(self, reserve_s: float | None = None) -> bool:
        """True when finishing one more item plus the reserve would overrun the session."""
        reserve = self.reserve_s if reserve_s is None else reserve_s
        return self.left_s() < self.item_estimate_s() + reserve

    def describe(self) -> str:
        if self.limit_s is None:
            return f"no session limit; {self.elapsed_s() / 60:.1f} min elapsed"
        return f"{self.left_s() / 3600:.2f} h left of {self.limit_s / 3600:.2f} h (reserve {self.reserve_s:.0f} s)"


# --------------------------------------------------------------------------------------------------
# Weekly quota ledger
# --------------------------------------------------------------------------------------------------

LEDGER_VERSION = 1
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass
class LedgerSession:
    account: str
    platform: str
    started_at: float
    ended_at: float
    gpu: bool
    job: str = ""

    @property
    def hours(self) -> float:
        return max(self.ended_at - self.started_at, 0.0) / 3600


@dataclass
class QuotaLedger:
    """Accelerator hours used per account and week, kept beside the manifest and synced with it."""

    sessions: list[LedgerSession] = field(default_factory=list)
    format_version: int = LEDGER_VERSION

    @classmethod
    def load(cls, path: str | Path) -> "QuotaLedger":
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if data.get("format_version") != LEDGER_VERSION:
            raise FormatError(f"{path}: quota ledger format_version {data.get('format_version')!r} "
                              f"is not supported (this tinytribe reads {LEDGER_VERSION})")
        return from_dict(cls, data, where=str(path))

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, to_dict(self), backup=True)

    def record(self, session: LedgerSession) -> None:
        """Add a session, or update the one with the same account and start (sessions are recorded
        as they go, so a killed session still counts)."""
        for i, s in enumerate(self.sessions):
            if (s.account, s.started_at) == (session.account, session.started_at):
                self.sessions[i] = session
                return
        self.sessions.append(session)

    @staticmethod
    def week_start(t: float, week_starts: str = "monday") -> dt.date:
        day = dt.datetime.fromtimestamp(t, dt.timezone.utc).date()
        return day - dt.timedelta(days=(day.weekday() - _WEEKDAYS.index(week_starts)) % 7)

    def gpu_hours(self, account: str, *, at: float, week_starts: str = "monday") -> float:
        """Accelerator hours ``account`` used in the quota week containing time ``at``."""
        week = self.week_start(at, week_starts)
        return sum(s.hours for s in self.sessions
                   if s.account == account and s.gpu and self.week_start(s.started_at, week_starts) == week)


# --------------------------------------------------------------------------------------------------
# Planner
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Throughput:
    """Seconds of compute per second of stimulus, by job, on a T4 (the design's figures).

    teacher: TRIBE v2 at about 2x real time (0.5 s/s). features: the three tiny backbones with ASR at
    about 10x real time (0.1 s/s).
    """

    teacher: float = 0.5
    features: float = 0.1


@dataclass(frozen=True)
class PlatformPlan:
    name: str
    session_h: float
    weekly_gpu_h: float | None
    usd_per_gpu_h: float = 0.0
    overhead_h: float = 0.25  # model load, restore, sync per session


PLATFORMS = (
    PlatformPlan("kaggle (1 account)", 9.0, 30.0),
    PlatformPlan("kaggle (2 accounts)", 9.0, 60.0),
    PlatformPlan("colab free", 4.0, 4.0 * 7),  # GPU is not guaranteed; ~3-5 h a day in practice
    PlatformPlan("cloud T4 ($1/h spot)", 24.0, None, usd_per_gpu_h=1.0, overhead_h=0.1),
)


def storage_gb(hours: float, *, n_outputs: int = 20484, pred_hz: float = 1.0, act_dim: int = 1152,
               n_acts: int = 2, act_hz: float = 2.0, feature_dims: tuple[int, ...] = (384, 384, 1280),
               feature_hz: float = 2.0) -> dict[str, float]:
    """Gigabytes of teacher cache and feature cache for ``hours`` of stimulus, fp16, as FORMATS stores
    them (teacher predictions at 1 Hz, two 1152-d activations at 2 Hz; features at 2 Hz)."""
    s = hours * 3600
    teacher = s * (pred_hz * n_outputs + act_hz * n_acts * act_dim) * 2
    features = s * feature_hz * sum(feature_dims) * 2
    return {"teacher_gb": teacher / 1e9, "features_gb": features / 1e9}


def plan(hours: float, job: Literal["teacher", "features"] = "teacher", throughput: Throughput = Throughput(),
         platforms: tuple[PlatformPlan, ...] = PLATFORMS) -> list[dict[str, float | str]]:
    """Sessions, weeks and cost to run ``job`` over ``hours`` of stimulus on each platform.

    Returns:
        One row per platform: ``gpu_hours``, ``sessions``, ``weeks``, ``usd``.
    """
    import math

    gpu_h = hours * getattr(throughput, job)
    rows = []
    for p in platforms:
        per_session = p.session_h - p.overhead_h
        sessions = math.ceil(gpu_h / per_session) if gpu_h > 0 else 0
        used = gpu_h + sessions * p.overhead_h
        weeks = used / p.weekly_gpu_h if p.weekly_gpu_h else used / (24 * 7)
        rows.append({"platform": p.name, "gpu_hours": round(used, 2), "sessions": sessions,
                     "weeks": round(weeks, 2), "usd": round(used * p.usd_per_gpu_h, 2)})
    return rows


def has_accelerator() -> bool:
    """Whether torch sees a CUDA device (False when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
