"""The pipeline with BDIRNET_STORAGE on S3 (a real S3 server on loopback): pair shards and Ray Train
checkpoints live on S3, and a rerun with more epochs resumes from the S3 checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from bdirnet import storage
from bdirnet.degrade import FAMILIES

from .conftest import TINY_PARAMS, make_project, merge, project_env, run

pytestmark = pytest.mark.slow

STAGES = {
    "bundle": ["python", "pipelines/bundle.py", "--out", "data/raw/skimage", "--real-blur-out", "data/raw/real_blur"],
    "ingest": ["python", "pipelines/ingest.py", "--out", "data/ingested"],
    "pairs": ["python", "pipelines/pairs.py", "--ingested", "data/ingested", "--out", "data/pairs"],
    "train": ["python", "pipelines/train.py", "--variant", "bdirnet", "--seed", "0", "--ingested", "data/ingested",
              "--pairs", "data/pairs",
              "--weights", "models/bdirnet-s0.pt", "--report", "reports/train.json"],
    "register": ["python", "pipelines/register.py", "--weights", "models/bdirnet-s0.pt",
                 "--train-report", "reports/train.json",
                 "--report", "reports/registered.json"],
    "evaluate": ["python", "pipelines/evaluate.py", "--pairs", "data/pairs", "--registered", "reports/registered.json",
                 "--real-blur", "data/raw/real_blur", "--report", "reports/eval.json", "--images", "reports/images"],
}  # fmt: skip


def test_pairs_and_checkpoints_on_s3_and_resume(s3_endpoint: str, tmp_path: Path, ray_tmp: str) -> None:
    params = merge(TINY_PARAMS, {"train": {"samples_per_epoch": 288}})
    workdir = make_project(tmp_path, params)
    env = project_env(
        workdir, ray_tmp, BDIRNET_STORAGE="s3://bdirnet-test/study", AWS_ENDPOINT_URL=s3_endpoint,
        **{k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")},
    )  # fmt: skip
    for stage in ("bundle", "ingest", "pairs", "train"):
        run(STAGES[stage], workdir, env)
    objects = storage.list_objects("s3://bdirnet-test/study")
    for split in ("val", "test"):  # training pairs are made on the fly
        assert any(key.startswith(f"pairs/{split}/") and key.endswith(".parquet") for key in objects), split
    assert any(key.startswith("checkpoints/") and key.endswith("/state.pt") for key in objects)
    assert json.loads((workdir / "data/pairs/remote.json").read_text())["uri"] == "s3://bdirnet-test/study/pairs"
    first = json.loads((workdir / "reports/train.json").read_text())
    assert first["best_checkpoint"].startswith("s3://bdirnet-test/study/checkpoints/")

    more = yaml.safe_load((workdir / "params.yaml").read_text())
    more["train"]["max_epochs"] = 2
    (workdir / "params.yaml").write_text(yaml.safe_dump(more, sort_keys=False))
    resumed = run(STAGES["train"], workdir, env)
    assert "resuming from epoch 1" in resumed.stdout + resumed.stderr
    assert json.loads((workdir / "reports/train.json").read_text())["epochs"] == 2
    # The model registered from the S3 checkpoint evaluates on the S3 test shards.
    run(STAGES["register"], workdir, env)
    run(STAGES["evaluate"], workdir, env)
    assert len(json.loads((workdir / "reports/eval.json").read_text())["families"]) == len(FAMILIES)
