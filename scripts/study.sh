#!/usr/bin/env bash
# The run command: set up .venv if needed, then run the whole study with `dvc repro` on embedded defaults
# (local Ray, sqlite:///mlflow.db, DVC local remote .dvcstore/) and print the per-family table.
# Extra arguments go to `dvc repro` (e.g. `--force`, or a stage name).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
start=$(date +%s)
dvc repro "$@"
echo
bdirnet table reports/eval.json
echo "study: $(( $(date +%s) - start ))s; MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db"
