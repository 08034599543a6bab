"""MLflow: runs, metrics, images, the model registry. The only module of the project that imports mlflow.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set (a shared server), else ``sqlite:///<repo>/mlflow.db`` with
artifacts in ``<repo>/mlartifacts``. Models are registered as ``bdirnet`` and addressed by version and
aliases (``challenger``, ``champion``), never by the deprecated stages.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "bdirnet"
EXPERIMENT = "bdirnet"
WEIGHTS_TAG = "weights_sha256"  # a version's identity: the SHA-256 of the weights file it was logged from
ONNX_TAG = "onnx_artifact"  # where a version's ONNX export lives: runs:/<run id>/export/bdirnet.onnx
ONNX_ARTIFACT = "export/bdirnet.onnx"


class RegistryError(ValueError):
    """The tracking server lacks what a report names (a bad input for the stage that reads the report); the message
    says which server and what fixes it."""


def tracking_uri(repo_root: Path | None = None) -> str:
    """The tracking URI: the environment's, else the embedded SQLite default at the repo root."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    value = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if value:
        return value
    root = (repo_root or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def redact_uri(uri: str, repo_root: Path | None = None) -> str:
    """``uri`` safe to commit: no user, password or query (tokens), and a SQLite file under the repository as a
    relative ``sqlite:///<path>`` (SQLAlchemy reads three slashes as relative), else only its file name."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme.startswith("sqlite"):
        path = Path(parsed.path[1:] if parsed.path.startswith("/") else parsed.path)
        root = (repo_root or Path.cwd()).resolve()
        if path.is_absolute():
            path = path.relative_to(root) if path.is_relative_to(root) else Path("<outside the repository>") / path.name
        return f"{parsed.scheme}:///{path.as_posix()}"
    host = parsed.hostname or ""
    if parsed.port is not None:
        host = f"{host}:{parsed.port}"
    return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))


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
    """Log metrics at ``step`` in one request (one transaction on SQLite, not one per metric)."""
    import time

    from mlflow.entities import Metric

    timestamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
    _client(uri).log_batch(run_id, metrics=batch)


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
    rejects other image sizes. The signature says float32 ``(-1, 3, -1, -1)``, one *unnamed* tensor: the pytorch
    flavour's pyfunc (``mlflow models serve``) takes an array, and a named tensor would reach it as a dict, which it
    rejects. Its ONNX export (:func:`bdirnet.export.export_onnx`) is logged into the same run as
    :data:`ONNX_ARTIFACT`, made before anything is registered, and the version is tagged :data:`ONNX_TAG` with its
    ``runs:/`` URI.
    """
    import tempfile

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from bdirnet.export import export_onnx

    client = _client(uri)
    with tempfile.TemporaryDirectory(prefix="bdirnet-onnx-") as temporary:
        onnx_file = Path(temporary) / Path(ONNX_ARTIFACT).name
        export_onnx(model, onnx_file)
        client.log_artifact(run_id, str(onnx_file), str(Path(ONNX_ARTIFACT).parent))
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
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
    for key, value in (tags | {ONNX_TAG: f"runs:/{run_id}/{ONNX_ARTIFACT}"}).items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)
    client.set_registered_model_alias(MODEL_NAME, "challenger", version)
    return version


@dataclass(frozen=True)
class Registration:
    """Where a weights file lives in the current registry: its version and the run it was logged into."""

    version: str
    run_id: str
    created: bool  # False: the version was already there and nothing new was written


def version_for_weights(uri: str, weights_sha256: str) -> tuple[str, str] | None:
    """(version, run id) of the ``bdirnet`` version tagged with this weights hash, the newest if several."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    try:
        found = client.search_model_versions(f"name = '{MODEL_NAME}' and tags.{WEIGHTS_TAG} = '{weights_sha256}'")
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return str(newest.version), str(newest.run_id)


def run_exists(uri: str, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = _client(uri).get_run(run_id)
    except MlflowException:
        return False
    return str(run.info.lifecycle_stage) == "active"


def ensure_registered(
    uri: str,
    weights_sha256: str,
    build_model: Any,
    code_path: Path,
    tags: dict[str, str],
    run_id: str | None,
    run_name: str,
    params: dict[str, Any],
    extra_artifact: Path | None = None,
) -> Registration:
    """Make sure the registry holds a version of ``bdirnet`` for this weights file (tag ``weights_sha256``).

    Already there: nothing is written. Else the model (``build_model()``, called only then) is logged and
    registered into ``run_id`` when that run exists on this server (the training run), or into a new run named
    ``run_name`` with ``params`` (a fresh tracking store, e.g. after ``dvc pull`` on another machine).
    ``extra_artifact`` (the weights file itself) is logged beside the model.
    """
    existing = version_for_weights(uri, weights_sha256)
    if existing is not None:
        return Registration(version=existing[0], run_id=existing[1], created=False)
    if run_id is None or not run_exists(uri, run_id):
        experiment_id = ensure_experiment(uri, artifact_root=Path("mlartifacts"))
        run_id = start_run(uri, experiment_id, run_name, {"ray_run_name": run_name, "registered_from": "weights"}
                           | {k: v for k, v in tags.items() if k in ("variant", "seed", "data_hash")})  # fmt: skip
        log_params(uri, run_id, params)
        end_run(uri, run_id)
    if extra_artifact is not None:
        log_artifact(uri, run_id, extra_artifact, "weights")
    version = log_and_register_model(uri, run_id, build_model(), code_path, tags | {WEIGHTS_TAG: weights_sha256})
    return Registration(version=version, run_id=run_id, created=True)


def download_onnx(uri: str, version: str, folder: Path) -> Path:
    """The ONNX export of ``bdirnet`` version ``version`` (tag :data:`ONNX_TAG`), downloaded into ``folder``."""
    import mlflow

    location = version_tags(uri, version).get(ONNX_TAG)
    if location is None:
        raise RegistryError(
            f"version {version} of {MODEL_NAME!r} on {redact_uri(uri)} has no ONNX export (registered before exports "
            f"were logged); make one with `bdirnet export --model models:/{MODEL_NAME}/{version} -o bdirnet.onnx`"
        )
    _client(uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder), tracking_uri=uri))


def require_version(uri: str, version: str, weights_sha256: str | None = None, where: str = "") -> None:
    """Fail with one line naming the server and the fix when ``bdirnet`` version ``version`` is not there (or is
    there, but logged from other weights than the report names)."""
    from mlflow.exceptions import MlflowException

    fix = "run `dvc repro` (its register stages re-register every run's weights file from models/)"
    try:
        tags = dict(_client(uri).get_model_version(MODEL_NAME, version).tags)
    except MlflowException:
        raise RegistryError(
            f"{where}: the tracking server {redact_uri(uri)} has no version {version} of {MODEL_NAME!r}; {fix}"
        ) from None
    if weights_sha256 is not None and tags.get(WEIGHTS_TAG) not in (None, weights_sha256):
        raise RegistryError(
            f"{where}: version {version} of {MODEL_NAME!r} on {redact_uri(uri)} holds other weights "
            f"({tags.get(WEIGHTS_TAG, '?')[:12]}, expected {weights_sha256[:12]}); {fix}"
        )


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


def set_run_tag(uri: str, run_id: str, key: str, value: str | None) -> None:
    """Set a run's tag, or delete it (``None``; a missing tag is fine)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri)
    if value is not None:
        client.set_tag(run_id, key, value)
        return
    if key in client.get_run(run_id).data.tags:
        with contextlib.suppress(MlflowException):  # deleted meanwhile
            client.delete_tag(run_id, key)


def run_tags(uri: str, run_id: str) -> dict[str, str]:
    return dict(_client(uri).get_run(run_id).data.tags)


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
