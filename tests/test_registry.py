"""The weights file and the registry as derived state, against a real MLflow SQLite store in a temp folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bdirnet import BDIRNet, ModelConfig, registry
from bdirnet.export import load_exported
from bdirnet.runtime import portable_location, resolve_location
from bdirnet.weights import file_sha256, load_weights, read_weights, save_weights

META = {"variant": "bdirnet", "seed": 0, "run_name": "bdirnet-abc", "data_hash": "d1", "best_val_psnr": 22.5,
        "params": {"model.levels": 2, "train.lr": 0.002}}  # fmt: skip


@pytest.fixture()
def small_model() -> BDIRNet:
    model = BDIRNet(ModelConfig(width_channels=8, levels=2))
    with torch.no_grad():  # not the identity init: a restoration that differs from the input
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite tracking store, with the working directory in tmp_path (mlartifacts/ lands there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_weights_file_round_trips_with_weights_only(tmp_path: Path, small_model: BDIRNet) -> None:
    path = tmp_path / "models" / "run.pt"
    digest = save_weights(path, small_model, META)
    assert digest == file_sha256(path)
    payload = torch.load(path, weights_only=True)  # plain data: no pickled code needed to read it
    assert payload["format"] == "bdirnet-weights" and json.loads(payload["meta"]) == META
    model, meta = load_weights(path)
    assert meta == META and model.config == small_model.config
    image = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(model(image), small_model(image))
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temporary left behind


def test_weights_file_is_byte_stable(tmp_path: Path, small_model: BDIRNet) -> None:
    assert save_weights(tmp_path / "a.pt", small_model, META) == save_weights(tmp_path / "b.pt", small_model, META)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a loadable weights file"), (b"not a zip", "not a loadable weights file")],
)
def test_bad_weights_file_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        read_weights(path)


def test_a_checkpoint_that_is_not_a_weights_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match="not a BDIRNet weights file"):
        read_weights(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no such weights file"):
        read_weights(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path: Path, small_model: BDIRNet) -> None:
    path = tmp_path / "w.pt"
    save_weights(path, small_model, META)
    payload = torch.load(path, weights_only=True)
    payload["model_config"] = json.dumps({**json.loads(payload["model_config"]), "width_channels": 16})
    torch.save(payload, path)
    with pytest.raises(ValueError, match="do not fit the model config"):
        load_weights(path)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://alice:s3cret@mlflow.internal:5000/prefix?token=abc", "http://mlflow.internal:5000/prefix"),
        ("https://user@host", "https://host"),
        ("databricks", "databricks"),
        ("postgresql://u:pw@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ],
)
def test_redact_uri_drops_credentials(uri: str, expected: str) -> None:
    redacted = registry.redact_uri(uri)
    assert redacted == expected
    assert "s3cret" not in redacted and "pw" not in redacted.split("//")[-1].split("@")[0]


def test_redact_uri_makes_sqlite_paths_relative(tmp_path: Path) -> None:
    assert registry.redact_uri(f"sqlite:///{tmp_path}/sub/mlflow.db", tmp_path) == "sqlite:///sub/mlflow.db"
    outside = registry.redact_uri("sqlite:////var/lib/secret-machine/mlflow.db", tmp_path)
    assert "secret-machine" not in outside and outside.endswith("/mlflow.db")


def test_portable_location_is_relative_to_repo_or_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BDIRNET_STORAGE", raising=False)
    assert portable_location(str(tmp_path / "checkpoints/run/c1")) == "checkpoints/run/c1"
    assert portable_location("s3://bucket/x/checkpoints/c1") == "s3://bucket/x/checkpoints/c1"
    with pytest.raises(ValueError, match="outside the repository"):
        portable_location("/somewhere/else/c1")
    storage = tmp_path.parent / f"{tmp_path.name}-storage"
    monkeypatch.setenv("BDIRNET_STORAGE", str(storage))
    recorded = portable_location(str(storage / "checkpoints/run/c1"))
    assert recorded == "$BDIRNET_STORAGE/checkpoints/run/c1"
    assert resolve_location(recorded) == f"{storage}/checkpoints/run/c1"


def ensure(uri: str, weights: Path, run_id: str | None = None) -> registry.Registration:
    model_code = Path(registry.__file__).parent
    tags = {"variant": "bdirnet", "seed": "0", "data_hash": "d1"}
    return registry.ensure_registered(
        uri, file_sha256(weights), lambda: load_weights(weights)[0], model_code, tags,
        run_id=run_id, run_name="bdirnet-abc", params=META["params"], extra_artifact=weights,
    )  # fmt: skip


def test_registration_is_derived_from_the_weights_file(store: str, tmp_path: Path, small_model: BDIRNet) -> None:
    weights = tmp_path / "models" / "bdirnet-s0.pt"
    save_weights(weights, small_model, META)
    # A fresh store and a train report whose run id comes from another store: a new run carries the params.
    first = ensure(store, weights, run_id="0123456789abcdef0123456789abcdef")
    assert first.created and first.version == "1"
    assert registry.version_params(store, first.version) == {"model.levels": "2", "train.lr": "0.002"}
    assert registry.version_tags(store, first.version)[registry.WEIGHTS_TAG] == file_sha256(weights)
    # Again: found by its hash, nothing new written.
    again = ensure(store, weights, run_id=first.run_id)
    assert again == registry.Registration(version="1", run_id=first.run_id, created=False)
    # The registered model restores like the weights file, at any size; so does the ONNX export logged beside it.
    restored = registry.load_model(store, first.version)
    image = torch.rand(1, 3, 45, 71)
    with torch.no_grad():
        assert torch.allclose(restored(image), small_model(image))
        expected = small_model(image)
    tag = registry.version_tags(store, first.version)[registry.ONNX_TAG]
    assert tag == f"runs:/{first.run_id}/export/bdirnet.onnx"
    onnx_file = registry.download_onnx(store, first.version, tmp_path / "download")
    assert float((load_exported(onnx_file)(image) - expected).abs().max()) < 1e-4
    # Other weights: a new version, logged into the existing run.
    other = tmp_path / "models" / "other.pt"
    save_weights(other, BDIRNet(ModelConfig(width_channels=8, levels=2)), META)
    second = ensure(store, other, run_id=first.run_id)
    assert second.created and second.version == "2" and second.run_id == first.run_id


def test_a_missing_version_names_the_server_and_the_fix(store: str, tmp_path: Path, small_model: BDIRNet) -> None:
    with pytest.raises(registry.RegistryError, match=r"eval.json: the tracking server sqlite:///mlflow.db has no "
                       r"version 3 of 'bdirnet'; run `dvc repro`"):  # fmt: skip
        registry.require_version(store, "3", where="eval.json")
    weights = tmp_path / "w.pt"
    save_weights(weights, small_model, META)
    version = ensure(store, weights).version
    registry.require_version(store, version, file_sha256(weights))
    with pytest.raises(registry.RegistryError, match="holds other weights"):
        registry.require_version(store, version, "f" * 64)


def test_load_is_safe_for_a_pickled_payload(tmp_path: Path) -> None:
    """A crafted file that would run code when unpickled is refused by weights_only loading."""

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "bdirnet-weights", "x": Exploit()}, path)
    with pytest.raises(ValueError, match="not a loadable weights file"):
        read_weights(path)
    assert not (tmp_path / "pwned").exists()
