"""A throw-away copy of the project (git + DVC) to run the real pipeline in, on tiny params."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

TINY_PARAMS: dict[str, dict[str, Any]] = {
    # The bundled scikit-image photos. Test split: brick, coffee, grass, ihc; val: astronaut, gravel (all textured;
    # other salts put near-blank photos in test, whose blurred input a seconds-long training cannot beat).
    "study": {"seeds": [0]},  # every variant of params.yaml, one seed
    "ingest": {"dataset": "skimage", "split_salt": "34:", "min_test_photos": 3, "min_val_photos": 2},
    "pairs": {"patch_px": 48, "val_crop_px": 64, "val_crops_per_image": 2, "test_crop_px": 64,
              "test_crops_per_image": 3, "batch_rows": 64, "num_actors": 1},
    "degrade": {"train_families": ["gaussian"], "held_out_families": ["motion", "shake", "defocus", "nonuniform"]},
    "model": {"width_channels": 16, "levels": 2},
    "train": {"num_workers": 2, "batch_size": 8, "max_epochs": 1, "samples_per_epoch": 1440, "lr": 0.004,
              "loss": {"latent_warmup_steps": 20}},
}  # fmt: skip


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base[key], value) if isinstance(value, dict) else value
    return out


def project_env(workdir: Path, ray_tmp: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BDIRNET_", "RAY_ADDRESS"))}
    env |= {
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "BDIRNET_RAY_TMP": ray_tmp,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


def make_project(root: Path, params_override: dict[str, Any]) -> Path:
    """Copy the pipeline (dvc.yaml, pipelines/, bdirnet/, params.yaml, data/raw/paired/: the paired datasets' folder,
    a dependency of ingest) into a fresh git + DVC repo."""
    workdir = root / "project"
    workdir.mkdir()
    for name in ("dvc.yaml", "pipelines", "bdirnet", "data/raw/paired/README.md"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, workdir / name)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), params_override)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workdir / ".gitignore").write_text("mlflow.db\nmlartifacts/\ncheckpoints/\n")
    env = project_env(workdir, "/tmp")
    run(["git", "init", "-q"], workdir, env)
    run(["git", "config", "user.email", "test@bdirnet.local"], workdir, env)
    run(["git", "config", "user.name", "test"], workdir, env)
    run(["dvc", "init", "-q"], workdir, env)
    run(["dvc", "config", "core.analytics", "false"], workdir, env)
    run(["dvc", "remote", "add", "-d", "local", str(root / "dvcstore")], workdir, env)
    run(["git", "add", "-A"], workdir, env)
    run(["git", "commit", "-qm", "pipeline"], workdir, env)
    return workdir


def clone_project(source: Path, dest: Path, params_override: dict[str, Any] | None = None) -> Path:
    """A real `git clone` of ``source`` (the project's own repository at HEAD, committed dvc.lock and all) at
    ``dest``, sharing this test run's .venv (stamped, so scripts/setup.sh skips) and, when given, with
    ``params_override`` merged into its params.yaml."""
    env = project_env(source, "/tmp")
    run(["git", "clone", "-q", str(source), str(dest)], source, env)
    # The clone shares this run's .venv; if its stamp did not match the clone's pyproject + lock, the clone's
    # scripts/setup.sh would reinstall into the shared venv with the clone's paths. Refuse instead.
    want = hashlib.sha256((dest / "pyproject.toml").read_bytes() + (dest / "requirements.lock").read_bytes())
    stamp = VENV_BIN.parent / ".bdirnet-setup"
    if not stamp.is_file() or stamp.read_text().strip() != want.hexdigest():
        pytest.fail(f"{VENV_BIN.parent} does not match the clone's pyproject.toml + requirements.lock: commit them "
                    "and run `bash scripts/setup.sh` before the clone tests")  # fmt: skip
    for key, value in (("user.email", "test@bdirnet.local"), ("user.name", "test")):
        run(["git", "config", key, value], dest, env)
    (dest / ".venv").symlink_to(VENV_BIN.parent, target_is_directory=True)
    if params_override:
        params = merge(yaml.safe_load((dest / "params.yaml").read_text()), params_override)
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def clone_env(workdir: Path, ray_tmp: str, **extra: str) -> dict[str, str]:
    """The environment of a command run in a clone: its own code first (not the editable install's)."""
    return project_env(workdir, ray_tmp, PYTHONPATH=str(workdir), **extra)


@pytest.fixture(scope="session")
def ray_tmp() -> Iterator[str]:
    """A short, private Ray session folder (socket paths must stay under ~100 characters)."""
    path = tempfile.mkdtemp(prefix="bdr-", dir="/tmp")
    yield path  # every stage script shuts its own local Ray down; no global `ray stop` that could hit others
    shutil.rmtree(path, ignore_errors=True)
