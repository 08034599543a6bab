"""MLflow: runs, metrics, images, the model registry. The only module of the project that imports mlflow.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set (a shared server), else ``sqlite:///<repo>/mlflow.db`` with
artifacts in ``<repo>/mlartifacts``. Models are registered as ``bdirnet`` and addressed by version and
aliases (``challenger``, ``champion``), never by the deprecated stages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "bdirnet"
EXPERIMENT = "bdirnet"


def tracking_uri(repo_root: Path | None = None) -> str:
    """The tracking URI: the environment's, else the embedded SQLite default at the repo root."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    value = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if value:
        return value
    root = (repo_root or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def _client(uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, artifact_root: Path | None = None) -> str:
    """The experiment id of ``bdirnet`` (created with local artifacts for the SQLite default)."""
    client = _client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if uri.startswith("sqlite:") and artifact_root is not None:
        location = artifact_root.resolve().as_uri()
    return str(client.create_experiment(EXPERIMENT, artifact_location=location))


def find_or_start_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Resume the MLflow run of a Ray Train run (tag ``ray_run_name``) or start a new one; returns its id."""
    client = _client(uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.ray_run_name = '{run_name}'", max_results=1, order_by=["start_time DESC"]
    )
    if runs:
        run_id = str(runs[0].info.run_id)
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(experiment_id, run_name=run_name, tags={"ray_run_name": run_name, **tags})
        run_id = str(run.info.run_id)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Log flat params; a value already logged with the same value is fine, a changed one is re-tagged."""
    client = _client(uri)
    existing = client.get_run(run_id).data.params
    for key, value in params.items():
        text = str(value)[:6000]
        if key in existing:
            if existing[key] != text:
                client.set_tag(run_id, f"param_changed.{key}", text)
            continue
        client.log_param(run_id, key, text)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    client = _client(uri)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value), step=step)


def log_image(uri: str, run_id: str, image: np.ndarray, artifact_file: str) -> None:
    """Log an (H, W, 3) uint8 image as a PNG artifact."""
    _client(uri).log_image(run_id, image, artifact_file=artifact_file)


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Log a file, or a folder as ``<artifact_path>/<folder name>/...``."""
    client = _client(uri)
    if path.is_dir():
        client.log_artifacts(run_id, str(path), "/".join(filter(None, [artifact_path, path.name])))
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status=status)


def log_and_register_model(uri: str, run_id: str, model: Any, code_path: Path, tags: dict[str, str]) -> str:
    """Log ``model`` into run ``run_id`` and register it as ``bdirnet``; returns the new version.

    The model is saved as a pickled eager module with the ``bdirnet`` package as code, *not* as a
    ``torch.export`` (pt2) graph: MLflow 3 defaults to pt2, which fixes the input shape of the example and then
    rejects other image sizes. The signature says float32 ``(-1, 3, -1, -1)``.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    _client(uri)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1), name="blurred")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1), name="restored")]),
    )
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            serialization_format="pickle",
            code_paths=[str(code_path)],
            registered_model_name=MODEL_NAME,
            pip_requirements=["torch==2.13.0", "kornia==0.9.0", "numpy", "pyyaml"],
        )
    version = str(info.registered_model_version)
    client = _client(uri)
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    client.set_registered_model_alias(MODEL_NAME, "challenger", version)
    return version


def load_model(uri: str, version: str) -> Any:
    """Load ``models:/bdirnet/<version>`` from the registry as a torch module (eval mode)."""
    import mlflow

    _client(uri)
    model = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}/{version}", map_location="cpu")
    return model.eval()


def alias_version(uri: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(uri).get_model_version_by_alias(MODEL_NAME, alias).version)
    except MlflowException:
        return None


def set_alias(uri: str, alias: str, version: str) -> None:
    _client(uri).set_registered_model_alias(MODEL_NAME, alias, version)


def version_tags(uri: str, version: str) -> dict[str, str]:
    return dict(_client(uri).get_model_version(MODEL_NAME, version).tags)


def set_version_tag(uri: str, version: str, key: str, value: str) -> None:
    _client(uri).set_model_version_tag(MODEL_NAME, version, key, value)


def run_params(uri: str, run_id: str) -> dict[str, str]:
    return dict(_client(uri).get_run(run_id).data.params)


def version_params(uri: str, version: str) -> dict[str, str]:
    """The params of the training run a registered version was logged from (model.*, train.*)."""
    client = _client(uri)
    return dict(client.get_run(client.get_model_version(MODEL_NAME, version).run_id).data.params)


def start_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a run that is not tied to a Ray run (e.g. one study's robustness report); returns its id.
    End it with :func:`end_run`."""
    return str(_client(uri).create_run(experiment_id, run_name=run_name, tags=tags).info.run_id)
