#!/usr/bin/env bash
# The test command: set up .venv if needed, then lint (ruff), type-check (mypy on bdirnet/) and run every test,
# the slow end-to-end ones included. Extra arguments go to pytest (e.g. `-m "not slow"`, `-k degrade`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

.venv/bin/ruff check bdirnet tests bench pipelines scripts
.venv/bin/ruff format --check bdirnet tests bench pipelines scripts
.venv/bin/mypy bdirnet
.venv/bin/python -m pytest "$@"
