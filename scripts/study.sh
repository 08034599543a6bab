#!/usr/bin/env bash
# The run command: set up .venv if needed, then run the whole robustness study with `dvc repro` on embedded
# defaults (local Ray, sqlite:///mlflow.db, DVC local remote .dvcstore/) and print the variant x family matrix.
#   bash scripts/study.sh            the default study: BDIRNet and its foils, 2 seeds each, on the fetched photos
#   bash scripts/study.sh --quick    the quick set as a DVC experiment (`dvc exp run` with params.quick.yaml)
#   bash scripts/study.sh --full     the full study with the ablations (no_said, no_sair, no_latent), params.full.yaml
#   bash scripts/study.sh --gpu      the default variants at GPU size (width 48, 4 levels, 256² patches, 40 epochs), params.gpu.yaml
# Other extra arguments go to `dvc repro` (e.g. `--force`). The study's product is the `robustness` stage; only the
# stages it needs run (with ingest.dataset: skimage, the photo fetch is never run). Every stage joins one local Ray
# head (`bdirnet with-ray`), stopped at the end, on failure and on Ctrl-C; with RAY_ADDRESS set, they join that
# cluster. `--wait-for-lock`: DVC releases its repository lock while a stage command runs and takes it back after,
# giving up after 3 s; without the flag, any other DVC command that holds the lock at that moment (a `dvc status` in
# another terminal, a second study being refused) fails this study after its stage ran. A second study started on
# the same repository is still refused, by the lock DVC holds on the running stage's outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
start=$(date +%s)
case "${1:-}" in
  --quick|--full|--gpu)
    overrides_file="params.${1#--}.yaml"
    shift
    mapfile -t overrides < <(bdirnet set-params "$overrides_file")
    bdirnet with-ray -- dvc --wait-for-lock exp run "${overrides[@]}" "$@" robustness
    ;;
  *)
    bdirnet with-ray -- dvc --wait-for-lock repro "$@" robustness
    ;;
esac
echo
bdirnet table reports/robustness.json
echo "study: $(( $(date +%s) - start ))s; report: reports/robustness.md; MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db"
