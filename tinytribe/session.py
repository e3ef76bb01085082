"""The start and end every notebook shares: doctor, restore, lock -- then ledger, push, release.

    s = Session.start(run_dir, account="ana", sync_remote="rclone:gdrive:tinytribe/teacher", planned="...")
    run_job(..., budget=s.loop_budget(session_limit_s), after_item=s.pusher(300))
    s.finish(job="teacher")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinytribe import doctor
from tinytribe.budget import LedgerSession, QuotaLedger, SessionBudget, detect_platform, has_accelerator
from tinytribe.sync import RunSync, open_remote


@dataclass
class Session:
    """This session's platform, budget and (optional) sync of the run folder."""

    platform: str
    budget: SessionBudget
    run_dir: Path
    account: str
    sync: RunSync | None = None

    @classmethod
    def start(cls, run_dir: str | Path, *, account: str = "default", sync_remote: str | None = None,
              reserve_s: float = 0.0, planned: str | None = None, needs_gpu: bool = False,
              needs_secrets: dict[str, str] | None = None, force_lock: bool = False,
              lock_lease_s: float = 600.0) -> "Session":
        """Keep caches out of Kaggle's output, restore and lock the run folder, run the doctor.

        ``force_lock`` takes the run folder's lock even from a live lease (a session that crashed
        without releasing it); never use it while another session is really running.

        Raises:
            DoctorError, SyncLockedError, RemoteError: the session should not start its work.
        """
        platform = detect_platform()
        doctor.configure_caches(platform)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        budget = SessionBudget.for_platform(platform, reserve_s=reserve_s)
        # a 10-minute lock renewed every minute: a crashed session holds the run folder 10 minutes at most
        sync = RunSync(open_remote(sync_remote), run_dir, lease_s=lock_lease_s, heartbeat_s=lock_lease_s / 10) \
            if sync_remote else None
        if sync:
            sync.acquire(force=force_lock)
            print(sync.restore().line("restored"))
        doctor.run(run_dir=run_dir, budget=budget, sync=sync, ledger_path=run_dir / "quota_ledger.json",
                   account=account, planned=planned, needs_gpu=needs_gpu, needs_secrets=needs_secrets)
        return cls(platform=platform, budget=budget, run_dir=run_dir, account=account, sync=sync)

    def loop_budget(self, limit_s: float | None = None) -> SessionBudget:
        """The session's budget, or -- for rehearsals and CI -- ``limit_s`` seconds from now."""
        if limit_s is None:
            return self.budget
        return SessionBudget.starting_now(limit_s, self.budget.reserve_s)

    def pusher(self, every_s: float) -> Callable[..., None] | None:
        """An ``after_item`` callback pushing the run folder at most every ``every_s`` seconds."""
        return self.sync.push_every(every_s) if self.sync else None

    def finish(self, job: str) -> None:
        """Record the session in the quota ledger, push the run folder and release its lock."""
        path = self.run_dir / "quota_ledger.json"
        ledger = QuotaLedger.load(path)
        ledger.record(LedgerSession(account=self.account, platform=self.platform, started_at=self.budget.started_at,
                                    ended_at=self.budget.clock(), gpu=has_accelerator(), job=job))
        ledger.save(path)
        if self.sync:
            print(self.sync.push().line("pushed"))
            self.sync.release()
