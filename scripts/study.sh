#!/usr/bin/env bash
# The run command: set up .venv if needed, then run the whole robustness study with `dvc repro` on embedded
# defaults (local Ray, sqlite:///mlflow.db, DVC local remote .dvcstore/) and print the variant x family matrix.
#   bash scripts/study.sh            the default study (every variant x 2 seeds; under an hour on 2 cores)
#   bash scripts/study.sh --quick    the quick set as a DVC experiment (1 seed, 1 epoch; under 15 minutes):
#                                    `dvc exp run` with the overrides of params.quick.yaml
# Other extra arguments go to `dvc repro` (e.g. `--force`, or a stage name). Every stage joins one local Ray head
# (`bdirnet with-ray`), stopped at the end, on failure and on Ctrl-C; with RAY_ADDRESS set, they join that cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
start=$(date +%s)
if [[ "${1:-}" == "--quick" ]]; then
  shift
  mapfile -t overrides < <(bdirnet set-params params.quick.yaml)
  bdirnet with-ray -- dvc exp run "${overrides[@]}" "$@"
else
  bdirnet with-ray -- dvc repro "$@"
fi
echo
bdirnet table reports/robustness.json
echo "study: $(( $(date +%s) - start ))s; report: reports/robustness.md; MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db"
