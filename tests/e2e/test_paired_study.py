"""A tiny study with a paired dataset (issue 15), through `dvc repro` as `scripts/study.sh` runs it: a generic
``data/raw/paired/tiny/`` of real scikit-image photos blurred by our zoo (train and test parts) is ingested beside
the bundled photos, a val split is carved from its train part, its val crops join the val shards, a quarter of the
training pairs are its patches (``train.paired_share``), every run is scored on its test images at full resolution
(tiled: ``evaluate.tile_px`` below the image size), and the robustness report has its column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from bdirnet.degrade import degrade
from bdirnet.images import to_tensor, to_uint8

from .conftest import TINY_PARAMS, clone_env, make_project, merge, run

pytestmark = pytest.mark.slow

# 4 train pairs (one val-carved), 2 test pairs: (photo, split, blur family); 128 x 160 px crops of the photos.
PAIRS = [
    ("astronaut", "train", "motion"),
    ("coffee", "train", "gaussian"),
    ("chelsea", "train", "motion"),
    ("rocket", "train", "defocus"),
    ("camera", "test", "motion"),
    ("immunohistochemistry", "test", "gaussian"),
]
PARAMS = {
    **TINY_PARAMS,
    "study": {"variants": ["bdirnet"], "seeds": [0], "promote_variant": "bdirnet", "picture_variants": ["bdirnet"]},
    "train": merge(TINY_PARAMS["train"], {"paired_share": 0.25, "samples_per_epoch": 192}),
    "evaluate": {"tile_px": 96, "overlap_px": 16, "paired_max_images": 0},
}


def write_tiny(root: Path) -> None:
    """data/raw/paired/tiny/<split>/blur|sharp/<photo>.png: real photos and their blur by our zoo."""
    for index, (name, split, family) in enumerate(PAIRS):
        image = getattr(data, name)()
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
        top, left = image.shape[0] // 2 - 64, image.shape[1] // 2 - 80
        sharp = np.ascontiguousarray(image[top : top + 128, left : left + 160])
        blurred = to_uint8(degrade(to_tensor(sharp), family, seed=index)[0])[0]
        for side, pixels in (("sharp", sharp), ("blur", blurred)):
            path = root / split / side / f"{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> dict[str, Any]:
    workdir = make_project(tmp_path_factory.mktemp("paired"), PARAMS)
    write_tiny(workdir / "data/raw/paired/tiny")
    env = clone_env(workdir, ray_tmp)
    run(["dvc", "add", "data/raw/paired/tiny"], workdir, env)
    out = run(["bdirnet", "with-ray", "--", "dvc", "--wait-for-lock", "repro", "robustness"], workdir, env, timeout=900)
    return {
        "workdir": workdir,
        "output": out.stdout,
        "robustness": json.loads((workdir / "reports/robustness.json").read_text()),
        "markdown": (workdir / "reports/robustness.md").read_text(),
        "train": json.loads((workdir / "reports/runs/bdirnet-s0/train.json").read_text()),
        "eval": json.loads((workdir / "reports/runs/bdirnet-s0/eval.json").read_text()),
    }


def test_paired_dataset_is_ingested_beside_the_photos_with_a_carved_val(study: dict[str, Any]) -> None:
    manifest = json.loads((study["workdir"] / "data/ingested/paired/tiny/manifest.json").read_text())
    assert manifest["kind"] == "paired" and manifest["counts"] == {"tiny": {"train": 3, "val": 1, "test": 2}}
    assert json.loads((study["workdir"] / "data/ingested/manifest.json").read_text()).get("kind") != "paired"


def test_real_pairs_are_in_val_and_mixed_into_training(study: dict[str, Any]) -> None:
    val = pq.read_table(study["workdir"] / "data/pairs/val", columns=["family", "params"]).to_pylist()
    real = [row for row in val if row["family"] == "tiny"]
    assert real and all(json.loads(row["params"])["dataset"] == "tiny" for row in real)
    assert study["train"]["stream"] == {"paired_share": 0.25, "paired_train_pairs": {"tiny": 3}}


def test_every_run_is_scored_on_the_whole_test_images(study: dict[str, Any]) -> None:
    tiny = study["eval"]["datasets"]["tiny"]
    assert tiny["protocol"] == "generic" and tiny["n"] == 2
    assert sorted(tiny["images"]) == ["test/blur/camera.png", "test/blur/immunohistochemistry.png"]
    assert 10 < tiny["psnr"] < 60 and 10 < tiny["blurred_psnr"] < 60


def test_report_has_the_cross_dataset_column(study: dict[str, Any]) -> None:
    variants = study["robustness"]["variants"]
    scored = study["eval"]["datasets"]["tiny"]  # one seed: the report's mean of the per-image values (5 digits)
    assert variants["bdirnet"]["datasets"]["tiny"]["psnr"] == pytest.approx(scored["psnr"], abs=2e-4)
    assert variants["blurred"]["datasets"]["tiny"]["psnr"] == pytest.approx(scored["blurred_psnr"], abs=2e-4)
    header = next(line for line in study["markdown"].splitlines() if line.startswith("| variant | "))
    assert header.split(" | ").index("tiny (real, generic)") > header.split(" | ").index("nonuniform (held-out)")
    assert "tiny (real) / bdirnet" in (study["workdir"] / "reports/robustness.csv").read_text()
