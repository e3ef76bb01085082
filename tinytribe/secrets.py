"""Secrets from Kaggle Secrets, Colab userdata or the environment -- and keeping them out of outputs.

A scheduled Kaggle run has no browser, so sync credentials come from the platform's secret store:
Kaggle *Add-ons -> Secrets*, Colab's key icon (*userdata*), or environment variables elsewhere. Values
are returned to the code that needs them and registered for :func:`redact`, which every sync error
message passes through; they are never printed, logged or written by tinytribe.

Secret names used by tinytribe:

- ``RCLONE_CONF``: the text of an ``rclone.conf`` holding the remote (its token included).
- ``GDRIVE_CLIENT_ID``, ``GDRIVE_CLIENT_SECRET``, ``GDRIVE_REFRESH_TOKEN``: an OAuth client and a
  refresh token for pydrive2.
- ``HF_TOKEN``: Hugging Face token (the teacher's gated text model).
"""

from __future__ import annotations

import json
import os
import re

KNOWN_SECRETS = ("RCLONE_CONF", "GDRIVE_CLIENT_ID", "GDRIVE_CLIENT_SECRET", "GDRIVE_REFRESH_TOKEN", "HF_TOKEN")
_REGISTERED: set[str] = set()
_MIN_LEN = 6  # shorter values would redact ordinary words


def _kaggle(name: str) -> str | None:
    try:
        from kaggle_secrets import UserSecretsClient  # only exists inside Kaggle kernels
    except ImportError:
        return None
    try:
        return UserSecretsClient().get_secret(name)
    except Exception:  # the secret is not attached to this notebook
        return None


def _colab(name: str) -> str | None:
    try:
        from google.colab import userdata  # only exists inside Colab
    except ImportError:
        return None
    try:
        return userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError
        return None


def get_secret(name: str) -> str | None:
    """The secret ``name`` from the environment (``TINYTRIBE_<NAME>`` or ``<NAME>``), Kaggle Secrets or
    Colab userdata, in that order; None when absent. The value is registered for redaction."""
    value = os.environ.get(f"TINYTRIBE_{name}") or os.environ.get(name) or _kaggle(name) or _colab(name)
    if value:
        register(value)
    return value or None


def present(names: tuple[str, ...] = KNOWN_SECRETS) -> dict[str, bool]:
    """Which secrets are available, by name only (the doctor cell prints this)."""
    return {n: get_secret(n) is not None for n in names}


_SENSITIVE_KEY = re.compile(r"token|pass|secret|key|credentials", re.IGNORECASE)


def register(value: str) -> None:
    """Redact ``value`` from now on -- and, for a config file, the value of each sensitive line
    (``token = {...}``, ``pass = ...``) and the strings inside a JSON token."""
    parts = {value.strip()}
    for line in value.splitlines():
        key, sep, val = line.partition("=")
        if sep and _SENSITIVE_KEY.search(key):
            val = val.strip()
            parts.add(val)
            try:
                parsed = json.loads(val)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                parts |= {v for v in parsed.values() if isinstance(v, str)}
    _REGISTERED.update(p for p in parts if len(p) >= _MIN_LEN)


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced by ``***``."""
    for value in sorted(_REGISTERED, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
