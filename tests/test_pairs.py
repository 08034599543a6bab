"""Ray Data pairs: shards readable, columns and dtypes right, deterministic across two runs (real Ray)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bdirnet.config import DegradeConfig, PairsConfig
from bdirnet.datasets import read_manifest
from bdirnet.degrade import FAMILIES, apply_degradation
from bdirnet.images import decode_png
from bdirnet.pairs import COLUMNS, plan_crops, untextured, write_pairs
from bdirnet.texture import decode_tiles

PAIRS = PairsConfig(patch_px=32, val_crop_px=64, val_crops_per_image=1, test_crop_px=64,
                    test_crops_per_image=1, batch_rows=16, num_actors=2)  # fmt: skip
DEGRADE = DegradeConfig(noise_sigma_max=0.0)


@pytest.fixture(scope="module")
def ingested(skimage_ingested: Path) -> Path:
    return skimage_ingested


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")
    }


def test_shards_columns_dtypes_and_determinism(ray_session: None, ingested: Path, tmp_path: Path) -> None:
    records = read_manifest(ingested)
    first = write_pairs(records, ingested, str(tmp_path / "a"), PAIRS, DEGRADE)
    # One actor instead of two: a pair depends on its row, not on which actor blurred it or how blocks were cut.
    second = write_pairs(records, ingested, str(tmp_path / "b"), dataclasses.replace(PAIRS, num_actors=1), DEGRADE)
    # val: astronaut, camera; test: chelsea, motorcycle_left/right, rocket; one textured 64 px crop each.
    assert first == second == {"val": 2 * len(FAMILIES), "test": 4 * len(FAMILIES)}
    assert digest(tmp_path / "a") == digest(tmp_path / "b"), "same params must give byte-identical shards"

    table = pq.read_table(tmp_path / "a" / "val")
    assert tuple(table.column_names) == COLUMNS
    assert table.schema.field("sharp").type == pa.binary() and table.schema.field("blurred").type == pa.binary()
    assert table.schema.field("family").type == pa.string() and table.schema.field("params").type == pa.string()
    rows = table.to_pylist()
    for split in ("val", "test"):  # every family of the zoo, held-out ones included, on val too
        held = pq.read_table(tmp_path / "a" / split).to_pylist()
        assert {row["family"] for row in held} == set(FAMILIES)
        assert {(row["height"], row["width"]) for row in held} == {(64, 64)}

    # A pair is reproducible from its record: re-blur the sharp crop with the stored params.
    row = rows[0]
    sharp = decode_png(row["sharp"])
    assert sharp.shape == (64, 64, 3) and sharp.dtype.name == "uint8"
    params = json.loads(row["params"])
    again = apply_degradation(torch.from_numpy(sharp.copy()).permute(2, 0, 1)[None].float() / 255, [params])
    stored = torch.from_numpy(decode_png(row["blurred"]).copy()).permute(2, 0, 1)[None].float() / 255
    assert float((again - stored).abs().max()) <= 0.5 / 255 + 1e-6


def test_plan_is_independent_of_batching(ingested: Path) -> None:
    records = read_manifest(ingested)
    plan = plan_crops(records, "test", PAIRS)
    assert len({row["pair_id"] for row in plan}) == len(plan)
    assert plan == plan_crops(records, "test", PAIRS)
    other_seed = plan_crops(records, "test", PairsConfig(**{**PAIRS.__dict__, "seed": 1}))
    assert [r["top"] for r in plan] == [r["top"] for r in other_seed], "crops come from the texture rule alone"
    assert [r["seed"] for r in plan] != [r["seed"] for r in other_seed], "pairs.seed seeds the blur draws"
    with pytest.raises(ValueError, match="only val and test pairs are materialised"):
        plan_crops(records, "train", PAIRS)


def test_test_pairs_are_keyed_by_family_name(ingested: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A family added to (or dropped from) the zoo leaves every other family's test pairs as they were."""
    import bdirnet.pairs

    records = read_manifest(ingested)
    full = {row["pair_id"]: row for row in plan_crops(records, "test", PAIRS)}
    monkeypatch.setattr(bdirnet.pairs, "FAMILIES", tuple(f for f in FAMILIES if f != "motion"))
    fewer = plan_crops(records, "test", PAIRS)
    assert fewer and all(full[row["pair_id"]] == row for row in fewer)
    assert len(full) == len(fewer) + len(fewer) // (len(FAMILIES) - 1)


def test_val_and_test_crops_follow_the_texture_rule(ingested: Path) -> None:
    """Val/test crops: up to N per photo, non-overlapping, textured enough, keyed ``<split>/<photo>/<box>/<family>``;
    the near-blank photos (moon, retina) give none and are listed."""
    records = read_manifest(ingested)
    by_name = {r.name: r for r in records}
    config = PairsConfig(**{**PAIRS.__dict__, "val_crop_px": 128, "val_crops_per_image": 3, "min_texture": 0.5})
    plan = plan_crops(records, "val", config)
    assert {row["source"] for row in plan} == {"astronaut.png", "camera.png"}
    assert all(row["pair_id"] == f"val/{row['source']}/{row['pair_id'].split('/')[2]}/{row['family']}" for row in plan)
    for source in ("astronaut.png", "camera.png"):
        boxes = sorted({(row["top"], row["left"], row["size"]) for row in plan if row["source"] == source})
        assert 1 <= len(boxes) <= 3 and all(size == 128 for _, _, size in boxes)
        assert len([row for row in plan if row["source"] == source]) == len(boxes) * len(FAMILIES)
        tiles = decode_tiles(by_name[source].texture)
        assert all(tiles[t // 32 : t // 32 + 4, u // 32 : u // 32 + 4].mean() >= 0.5 for t, u, _ in boxes)
    # Put the near-blank photos in test: they contribute no pair and are named.
    moved = [dataclasses.replace(r, split="test") if r.name in ("moon.png", "retina.jpg") else r for r in records]
    large = PairsConfig(**{**PAIRS.__dict__, "test_crop_px": 256, "test_crops_per_image": 3})
    test_plan = plan_crops(moved, "test", large)
    assert {row["source"] for row in test_plan} == {"chelsea.png", "motorcycle_left.png", "motorcycle_right.png",
                                                     "rocket.jpg"}  # fmt: skip
    assert untextured(moved, "test", large) == ["moon.png", "retina.jpg"]
    assert plan_crops(moved, "test", large) == test_plan  # deterministic
