#!/usr/bin/env bash
# Install Tiny-TRIBE into ./.venv on a Debian/Ubuntu machine with Python 3.11 (3.10+ works).
#   bash scripts/setup.sh          the library, CLI and notebooks
#   bash scripts/setup.sh --test   the same plus the test tools
# torch is installed first, on its own, so nothing later pulls another build of it. Choose the build
# with TORCH_SPEC (default torch==2.13.0) and, for a CPU-only wheel index, TORCH_INDEX_URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

PY=""
for c in python3.11 python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))'; then
    PY="$c"; break
  fi
done
[ -n "$PY" ] || { echo "setup: needs Python 3.10 or newer (3.11 recommended)" >&2; exit 1; }

# System packages, installed only when missing: venv (Debian/Ubuntu ship it separately), rclone (the
# sync backend; the tests serve a loopback remote with it), espeak-ng (speech for the tests and demo),
# chromium (with --test).
missing=""
"$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
command -v rclone >/dev/null 2>&1 || missing="$missing rclone"
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
# the tests render the HTML report in a real browser (Playwright drives Debian's chromium)
[ -n "$extras" ] && ! command -v chromium >/dev/null 2>&1 && missing="$missing chromium"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".${extras}"
echo "setup: tinytribe installed in $(pwd)/.venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
