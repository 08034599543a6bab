"""The trained-weights file of one run: the product of ``train``, a DVC output, what ``register`` logs, and what a
user loads without Ray or MLflow.

One ``.pt`` file holding plain data only, so ``torch.load(path, weights_only=True)`` reads it (no pickled code)::

    {"format": "bdirnet-weights", "format_version": 1,
     "state_dict": {...tensors...},
     "model_config": "<ModelConfig as JSON>",
     "meta": "<JSON: variant, seed, data hash, best val PSNR, flat model./train. params, ...>"}

Example:
    >>> from bdirnet.weights import load_weights
    >>> model, meta = load_weights("models/bdirnet-s0.pt")  # doctest: +SKIP
    >>> restored = model(blurred)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from bdirnet.config import ConfigError, ModelConfig, from_mapping, to_dict
from bdirnet.images import atomic_write
from bdirnet.model import build_model

FORMAT = "bdirnet-weights"
FORMAT_VERSION = 1


def save_weights(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> str:
    """Write ``model``'s weights, its config and ``meta`` (JSON-serialisable) to ``path`` atomically; returns the
    file's SHA-256. The tensors are saved on the CPU, detached, in a stable key order."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
        "model_config": json.dumps(to_dict(model_config_of(model)), sort_keys=True),
        "meta": json.dumps(meta, sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # a file object, not a path: torch names the archive after a path's file name
    torch.save(payload, buffer)
    atomic_write(path, buffer.getvalue())
    return file_sha256(path)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    """The state dict, model config and meta of a weights file, read with ``weights_only=True``.

    Raises:
        ValueError: naming ``path`` when it is missing, not a torch file, or not a BDIRNet weights file.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such weights file (run `dvc repro` or `dvc pull` first)") from None
    except Exception as error:  # torch raises pickle/zip/runtime errors of many kinds for a bad file
        raise ValueError(f"{path}: not a loadable weights file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a BDIRNet weights file (expected format {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: weights format version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    try:
        config = from_mapping(ModelConfig, json.loads(payload["model_config"]), f"{path}: model_config")
        meta = json.loads(payload["meta"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: broken weights file ({type(error).__name__}: {error})") from None
    except ConfigError as error:
        raise ValueError(str(error)) from None
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: broken weights file (no state_dict)")
    return state_dict, config, meta


def load_weights(path: Path | str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The BDIRNet of a weights file, in eval mode, and its meta."""
    path = Path(path)
    state_dict, config, meta = read_weights(path)
    model = build_model(config)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the model config they carry ({error})") from None
    return model.eval(), meta


def model_config_of(model: torch.nn.Module) -> ModelConfig:
    """The ``ModelConfig`` a network was built from (every registered architecture keeps it as ``.config``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"{type(model).__name__} has no ModelConfig in .config; build it with bdirnet.model.build_model"
        )
    return config


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes: the identity of a weights file in the registry."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
