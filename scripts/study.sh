#!/usr/bin/env bash
# The run command: set up .venv if needed, then run the whole study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
echo "The library is in place; the DVC pipeline (dvc repro: ingest -> pairs -> train -> register -> evaluate)"
echo "arrives with the pipeline issue. Meanwhile, the model's cost:"
.venv/bin/python bench/model_cost.py
