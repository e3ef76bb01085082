"""Session budgets, platform detection, the quota ledger and the planner."""

from __future__ import annotations

import datetime as dt

import pytest

from tinytribe import budget as bd


class Clock:
    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t


def test_detect_platform():
    assert bd.detect_platform({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}) == "kaggle"
    assert bd.detect_platform({"COLAB_RELEASE_TAG": "release-colab_2026"}) == "colab"
    assert bd.detect_platform({"HOME": "/root"}) == "local"


def test_should_stop_uses_measured_item_times():
    clock = Clock(1000.0)
    b = bd.SessionBudget(limit_s=100.0, started_at=1000.0, reserve_s=10.0, clock=clock)
    assert not b.should_stop()  # nothing measured yet: the first item may start
    clock.t += 30
    b.record_item(30.0)
    assert b.left_s() == 70 and not b.should_stop()  # 70 left >= 30 + 10
    clock.t += 35
    b.record_item(35.0)
    assert b.should_stop()  # 35 left < 35 + 10
    assert not b.should_stop(reserve_s=0.0)  # 35 >= 35 + 0: the item just fits
    b.record_item(1.0)
    assert b.item_estimate_s() == 35.0  # the slowest of the recent items


def test_unlimited_and_platform_defaults():
    b = bd.SessionBudget(limit_s=None, started_at=0.0, clock=Clock(1e9))
    assert b.left_s() == float("inf") and not b.should_stop()
    cfg = bd.BudgetConfig()
    assert cfg.session_limit_s("kaggle") == 9 * 3600 and cfg.session_limit_s("local") is None
    k = bd.SessionBudget.for_platform("kaggle", cfg)
    assert k.limit_s == 9 * 3600 and 0 <= k.elapsed_s() < 10 * 24 * 3600


def test_ledger_counts_per_account_and_week(tmp_path):
    def ts(y, m, d, h=0):
        return dt.datetime(y, m, d, h, tzinfo=dt.timezone.utc).timestamp()

    led = bd.QuotaLedger()
    led.record(bd.LedgerSession("ana", "kaggle", ts(2026, 11, 23, 1), ts(2026, 11, 23, 10), gpu=True))  # Mon
    led.record(bd.LedgerSession("ana", "kaggle", ts(2026, 11, 28, 0), ts(2026, 11, 28, 3), gpu=True))  # Sat
    led.record(bd.LedgerSession("ana", "kaggle", ts(2026, 11, 22, 0), ts(2026, 11, 22, 5), gpu=True))  # Sun before
    led.record(bd.LedgerSession("ben", "kaggle", ts(2026, 11, 24, 0), ts(2026, 11, 24, 2), gpu=True))
    led.record(bd.LedgerSession("ana", "local", ts(2026, 11, 24, 0), ts(2026, 11, 24, 8), gpu=False))
    assert led.gpu_hours("ana", at=ts(2026, 11, 26)) == pytest.approx(12.0)
    assert led.gpu_hours("ben", at=ts(2026, 11, 26)) == pytest.approx(2.0)
    # weeks starting on Saturday: Sat 21 - Fri 27 holds Sunday's and Monday's sessions, not Saturday 28's
    assert led.gpu_hours("ana", at=ts(2026, 11, 26), week_starts="saturday") == pytest.approx(14.0)
    assert led.gpu_hours("ana", at=ts(2026, 11, 28), week_starts="saturday") == pytest.approx(3.0)
    # a session recorded again as it goes (same start) is updated, not counted twice
    led.record(bd.LedgerSession("ben", "kaggle", ts(2026, 11, 24, 0), ts(2026, 11, 24, 4), gpu=True))
    assert led.gpu_hours("ben", at=ts(2026, 11, 26)) == pytest.approx(4.0)
    led.save(tmp_path / "ledger.json")
    assert bd.QuotaLedger.load(tmp_path / "ledger.json") == led
    assert bd.QuotaLedger.load(tmp_path / "none.json").sessions == []


def test_plan_matches_the_design_tables():
    rows = {r["platform"]: r for r in bd.plan(15.0, "teacher")}
    # 15 h of video at 2x real time = 7.5 GPU-h: one 9 h Kaggle session, a quarter of a week's quota
    k = rows["kaggle (1 account)"]
    assert k["sessions"] == 1 and k["gpu_hours"] == pytest.approx(7.75) and k["usd"] == 0
    assert k["weeks"] == pytest.approx(7.75 / 30, abs=0.01)
    rows = {r["platform"]: r for r in bd.plan(320.0, "teacher")}
    assert rows["cloud T4 ($1/h spot)"]["usd"] == pytest.approx(160 + 0.1 * 7, abs=0.01)  # design: ~$160
    assert rows["kaggle (1 account)"]["sessions"] == 19  # 160 GPU-h / 8.75 h usable per session
    s = bd.storage_gb(1.0)
    assert s["teacher_gb"] == pytest.approx(3600 * (20484 + 2 * 2 * 1152) * 2 / 1e9)
    assert s["features_gb"] == pytest.approx(3600 * 2 * (384 + 384 + 1280) * 2 / 1e9)


def test_the_session_start_can_be_given(monkeypatch):
    import psutil

    monkeypatch.delenv(bd.SESSION_START_ENV, raising=False)
    assert bd.session_start_time("kaggle") == psutil.Process(1).create_time()   # the container is the session
    assert bd.session_start_time("local") == psutil.Process().create_time()
    monkeypatch.setenv(bd.SESSION_START_ENV, "1700000000.5")
    assert bd.session_start_time("kaggle") == 1700000000.5
    monkeypatch.setenv(bd.SESSION_START_ENV, "yesterday")
    with pytest.raises(ValueError, match="TINYTRIBE_SESSION_STARTED_AT='yesterday': expected Unix seconds"):
        bd.session_start_time("colab")
