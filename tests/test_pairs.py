"""Ray Data pairs: shards readable, columns and dtypes right, deterministic across two runs (real Ray)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bdirnet.config import DegradeConfig, IngestConfig, PairsConfig
from bdirnet.datasets import bundle_skimage_photos, ingest_folder, read_manifest
from bdirnet.degrade import FAMILIES, apply_degradation
from bdirnet.images import decode_png
from bdirnet.pairs import COLUMNS, plan_crops, write_pairs
from bdirnet.runtime import init_ray, shutdown_ray

PAIRS = PairsConfig(patch_px=32, train_patches_per_image=6, val_patches_per_image=2, test_crop_px=48,
                    test_crops_per_side=1, batch_rows=16, num_actors=2)  # fmt: skip
DEGRADE = DegradeConfig(noise_sigma_max=0.0)


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="bdr-", dir="/tmp") as temp:
        import os

        os.environ["BDIRNET_RAY_TMP"] = temp
        init_ray(num_cpus=2)
        yield
        shutdown_ray()


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    bundle_skimage_photos(root / "raw")
    ingest_folder(root / "raw", root / "ingested", IngestConfig())
    return root / "ingested"


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")
    }


def test_shards_columns_dtypes_and_determinism(ray_session: None, ingested: Path, tmp_path: Path) -> None:
    records = read_manifest(ingested)
    first = write_pairs(records, ingested, str(tmp_path / "a"), PAIRS, DEGRADE)
    second = write_pairs(records, ingested, str(tmp_path / "b"), PAIRS, DEGRADE)
    assert first == second == {"train": 9 * 6, "val": 2 * 2, "test": 4 * len(FAMILIES)}
    assert digest(tmp_path / "a") == digest(tmp_path / "b"), "same params must give byte-identical shards"

    table = pq.read_table(tmp_path / "a" / "train")
    assert tuple(table.column_names) == COLUMNS
    assert table.schema.field("sharp").type == pa.binary() and table.schema.field("blurred").type == pa.binary()
    assert table.schema.field("family").type == pa.string() and table.schema.field("params").type == pa.string()
    assert table.num_rows == 54
    rows = table.to_pylist()
    assert {row["family"] for row in rows} == set(DEGRADE.train_families)
    test_rows = pq.read_table(tmp_path / "a" / "test").to_pylist()
    assert {row["family"] for row in test_rows} == set(FAMILIES)

    # A pair is reproducible from its record: re-blur the sharp crop with the stored params.
    row = rows[0]
    sharp = decode_png(row["sharp"])
    assert sharp.shape == (32, 32, 3) and sharp.dtype.name == "uint8"
    params = json.loads(row["params"])
    again = apply_degradation(torch.from_numpy(sharp.copy()).permute(2, 0, 1)[None].float() / 255, [params])
    stored = torch.from_numpy(decode_png(row["blurred"]).copy()).permute(2, 0, 1)[None].float() / 255
    assert float((again - stored).abs().max()) <= 0.5 / 255 + 1e-6


def test_plan_is_independent_of_batching(ingested: Path) -> None:
    records = read_manifest(ingested)
    plan = plan_crops(records, "train", PAIRS, DEGRADE)
    assert len({row["pair_id"] for row in plan}) == len(plan)
    assert plan == plan_crops(records, "train", PAIRS, DEGRADE)
    other_seed = plan_crops(records, "train", PairsConfig(**{**PAIRS.__dict__, "seed": 1}), DEGRADE)
    assert [r["top"] for r in plan] != [r["top"] for r in other_seed]


def test_test_pairs_are_keyed_by_family_name(ingested: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family added to (or dropped from) the zoo leaves every other family's test pairs as they were."""
    import bdirnet.pairs

    records = read_manifest(ingested)
    full = {row["pair_id"]: row for row in plan_crops(records, "test", PAIRS, DEGRADE)}
    monkeypatch.setattr(bdirnet.pairs, "FAMILIES", tuple(f for f in FAMILIES if f != "motion"))
    fewer = plan_crops(records, "test", PAIRS, DEGRADE)
    assert fewer and all(full[row["pair_id"]] == row for row in fewer)
    assert len(full) == len(fewer) + len(fewer) // (len(FAMILIES) - 1)
