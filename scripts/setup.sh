#!/usr/bin/env bash
# Make .venv on a fresh machine: torch==2.13.0 (CPU build) first, then the pinned set in requirements.lock and
# this package (editable). Skipped when .venv already matches pyproject.toml + requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=".venv/.bdirnet-setup"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "setup: creating .venv (torch==2.13.0 first, then requirements.lock)" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {  # pip's exit status is kept; only the machine's noisy find-links warnings are dropped
  .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
# An unpinned torch would pull a multi-GB CUDA build; 2.13.0 CPU is what the lock was resolved against.
pip_install "torch==2.13.0"
pip_install -r requirements.lock
pip_install --no-deps -e .
.venv/bin/python -c "import torch, kornia, ray, mlflow, dvc, boto3, skimage, bdirnet" \
  || { echo "setup: .venv is incomplete (an import failed above)" >&2; exit 1; }
echo "$want" > "$stamp"
echo "setup: done" >&2
