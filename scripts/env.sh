# Environment defaults for every command of this project (sourced by scripts/*.sh). Machine-specific settings
# (MLFLOW_TRACKING_URI, BDIRNET_STORAGE, AWS_ENDPOINT_URL) are left to the user's environment.
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=1
export DVC_NO_ANALYTICS=1
export RAY_USAGE_STATS_ENABLED=0
export PYTHONHASHSEED=0
# The project's venv first, so `dvc repro` runs the stage scripts with it.
export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin:$PATH"
