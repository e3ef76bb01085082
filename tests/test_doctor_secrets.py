"""Secrets stay out of outputs; the doctor reports and refuses."""

from __future__ import annotations

import logging

import pytest

from tinytribe import doctor, secrets
from tinytribe.budget import SessionBudget
from tinytribe.sync import FolderRemote, RemoteError, RunSync


def test_secrets_from_env_and_redaction(monkeypatch):
    conf = "[gd]\ntype = drive\nscope = drive\ntoken = {\"access_token\":\"ya29.abcdefgh\",\"refresh_token\":\"1//0gXYZ-refresh\"}\n"
    monkeypatch.setenv("TINYTRIBE_RCLONE_CONF", conf)
    assert secrets.get_secret("RCLONE_CONF") == conf
    assert secrets.present(("RCLONE_CONF", "GDRIVE_REFRESH_TOKEN"))["RCLONE_CONF"] is True
    text = "rclone failed: token 1//0gXYZ-refresh expired, access ya29.abcdefgh"
    assert secrets.redact(text) == "rclone failed: token *** expired, access ***"
    assert "drive" in secrets.redact("type = drive")  # ordinary config words stay readable
    err = RemoteError("upload failed with ya29.abcdefgh in the URL")
    assert "ya29" not in str(err)


def test_doctor_names_secrets_never_values(monkeypatch, tmp_path, capsys, caplog):
    monkeypatch.setenv("TINYTRIBE_GDRIVE_REFRESH_TOKEN", "1//refresh-token-value-xyz")
    caplog.set_level(logging.DEBUG)
    sync = RunSync(FolderRemote(tmp_path / "remote"), tmp_path / "run", owner="me")
    rep = doctor.run(run_dir=tmp_path / "run", budget=SessionBudget.starting_now(3600.0, reserve_s=60.0), sync=sync,
                     ledger_path=tmp_path / "run" / "quota_ledger.json", account="ana", planned="3 items, 0.1 h")
    out = capsys.readouterr().out
    assert "GDRIVE_REFRESH_TOKEN yes" in out and "refresh-token-value-xyz" not in out
    assert "refresh-token-value-xyz" not in caplog.text
    assert "1 KB round trip" in out and "plan: 3 items" in out and "accelerator: " in out
    assert not rep.problems


def test_doctor_refuses_when_something_is_wrong(tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "TINYTRIBE_HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    class Broken(FolderRemote):
        def upload(self, local, key):
            raise RemoteError("403 storage quota exceeded")

    sync = RunSync(Broken(tmp_path / "r"), tmp_path / "run", sleep=lambda s: None, attempts=2)
    with pytest.raises(doctor.DoctorError) as e:
        doctor.run(run_dir=tmp_path, budget=SessionBudget.starting_now(100.0, reserve_s=300.0), sync=sync,
                   min_free_gb=1e9, needs_gpu=True, needs_secrets={"HF_TOKEN": "Llama-3.2-3B is gated"})
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("min left", "GiB free for outputs", "needs a GPU", "storage quota exceeded",
                 "secret HF_TOKEN is missing: Llama-3.2-3B is gated"):
        assert part in msg, part


def test_precision_and_kaggle_caches(monkeypatch, tmp_path):
    assert doctor.precision_for((7, 5)) == "fp16 with loss scaling"  # T4
    assert doctor.precision_for((6, 0)) == "fp16 with loss scaling"  # P100
    assert doctor.precision_for((8, 0)) == "bf16" and doctor.precision_for((9, 0)) == "bf16"
    assert doctor.precision_for(None) == "fp32 (CPU)"
    for v in doctor.CACHE_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_HOME", "/kaggle/working/hf_cache")  # the design card's choice: fills the output
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    rep = doctor.check(run_dir=tmp_path, budget=SessionBudget.starting_now(None))
    assert any("HF_HOME point into /kaggle/working" in p for p in rep.problems)
    monkeypatch.delenv("HF_HOME")
    set_now = doctor.configure_caches("kaggle", home=tmp_path)
    assert set_now["HF_HOME"] == str(tmp_path / ".cache" / "huggingface")
    assert not doctor.check(run_dir=tmp_path, budget=SessionBudget.starting_now(None)).problems
    assert doctor.configure_caches("colab") == {}


def test_session_start_and_finish_with_a_remote(tmp_path, capsys):
    from tinytribe.budget import QuotaLedger
    from tinytribe.sync import SyncLockedError
    from tinytribe.session import Session

    remote = f"folder:{tmp_path / 'drive'}"
    s = Session.start(tmp_path / "run", account="ana", sync_remote=remote, planned="nothing")
    (tmp_path / "run" / "out.txt").write_text("result")
    with pytest.raises(SyncLockedError, match="held by"):
        Session.start(tmp_path / "other", sync_remote=remote)  # a second session is kept out
    s.finish(job="probe")
    assert "pushed" in capsys.readouterr().out
    assert (tmp_path / "drive" / "out.txt").read_text() == "result"
    assert QuotaLedger.load(tmp_path / "drive" / "quota_ledger.json").sessions[0].account == "ana"
    crashed = Session.start(tmp_path / "b", sync_remote=remote)  # takes the lock, then "crashes"
    assert crashed.sync is not None
    again = Session.start(tmp_path / "c", sync_remote=remote, force_lock=True)
    assert (tmp_path / "c" / "out.txt").read_text() == "result"  # restored
    again.finish(job="probe")
