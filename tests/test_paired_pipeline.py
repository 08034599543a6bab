"""Real pairs in the study (issue 15): val carved by scene, val shards and the training stream with real pairs,
whole-image scoring with each dataset's protocol, and the cross-dataset columns of the report. Without paired
datasets, the val/test plan, the stream's rows and its identity are exactly those of the code before real pairs
(digests pinned from that code)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from bdirnet.config import (
    ConfigError,
    DegradeConfig,
    EvaluateConfig,
    IngestConfig,
    PairsConfig,
    StudyConfig,
    TrainConfig,
)
from bdirnet.datasets import read_manifest
from bdirnet.degrade import FAMILIES
from bdirnet.images import decode_png, read_png
from bdirnet.paired import LAYOUTS, carve_val, ingest_paired_root, read_paired_datasets, scene_of
from bdirnet.paired_eval import evaluate_paired
from bdirnet.pairs import PAIRED_SLOT, VAL_SLOTS, decode_pairs, plan_crops, plan_paired_crops, write_pairs
from bdirnet.protocols import psnr_rgb8, ssim_matlab
from bdirnet.robustness import build, render_markdown
from bdirnet.streaming import TrainPairMaker, draw_row, make_plan, plan_identity, read_photos

from .test_paired import REPO, make_generic, make_gopro, make_kohler, make_realblur, sharp_photo

RULES = IngestConfig(dataset="pairs", min_side_px=32, min_test_photos=0, min_val_photos=0, val_percent=15)
DEGRADE = DegradeConfig(none_share=0.2)


def sha(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def paired_ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/raw/paired with a GoPro and a generic split dataset, ingested under <ingested>/paired/."""
    root = tmp_path_factory.mktemp("paired")
    make_gopro(root / "raw" / "gopro")
    for split in ("train", "test"):  # generic with splits: tiny/train|test/blur + sharp
        make_generic(root / "raw" / "tiny" / split)
    ingest_paired_root(root / "raw", root / "ingested" / "paired", RULES)
    return root / "ingested"


class TestUnchangedWithoutRealPairs:
    """Pinned from the code before real pairs (commit d0890c4): plan rows, stream recipes, stream identity."""

    def test_val_and_test_plan(self, skimage_ingested: Path) -> None:
        records = read_manifest(skimage_ingested)
        pairs = PairsConfig(val_crop_px=64, test_crop_px=64, test_crops_per_image=2)
        rows = plan_crops(records, "val", pairs) + plan_crops(records, "test", pairs)
        assert sha(rows) == "5111f04d19e7b277b22f64d376cbd4f63d4018408225979215685352a8fa5ca5"

    @pytest.mark.parametrize(
        ("leaves", "rows_digest", "identity_digest"),
        [
            (0.0, "655f7ef45842e43ba4f4a445e7966222e8fe6ee9b11732a22795cdbc2abaaa93",
             "6f9ee778af31e36ae3086f46a02e9403ae8c3d284f24da8d40944cee795eedc8"),
            (0.3, "995418da40d004b9b3faa161fd8f79851cfc276ea09b65b27bfc297e571764f5",
             "b2e6ac57733e290bfb50341ed2bc914f2c3d135d25d210b1f3fef090fe739557"),
        ],
    )  # fmt: skip
    def test_stream_rows_and_identity(
        self, skimage_ingested: Path, leaves: float, rows_digest: str, identity_digest: str
    ) -> None:
        records = read_manifest(skimage_ingested)
        plan = make_plan(records, skimage_ingested, 32, 3, 40, DEGRADE, leaves)
        recipes = [asdict(draw_row(plan, i)) for i in range(200)]
        assert all(r.pop("blurred_file") is None for r in recipes)
        assert sha(recipes) == rows_digest
        assert sha(plan_identity(plan)) == identity_digest


def test_val_is_carved_from_train_by_scene(paired_ingested: Path) -> None:
    datasets = read_paired_datasets(paired_ingested / "paired")
    assert sorted(datasets) == ["gopro", "tiny"]
    gopro = {r.pair_id: r.split for r in datasets["gopro"]}
    # GOPR0372_07_00 (2 frames) and GOPR0374_11_01 (1 frame): whole sequences move, the test part stays.
    val_scenes = {pid.split("/")[1] for pid, split in gopro.items() if split == "val"}
    train_scenes = {pid.split("/")[1] for pid, split in gopro.items() if split == "train"}
    assert len(val_scenes) == 1 and len(train_scenes) == 1 and not val_scenes & train_scenes
    assert [s for p, s in gopro.items() if p.startswith("test/")] == ["test"]
    # generic: each pair its own scene; a dataset that has a val split (its own or carved) keeps its splits.
    records = datasets["tiny"]
    assert sorted(r.split for r in records) == ["test"] * 3 + ["train"] * 2 + ["val"]
    assert carve_val(records, 50, "") == records
    unsplit = [replace(r, split="train" if r.split == "val" else r.split) for r in records]
    halved = carve_val(unsplit, 50, "")
    assert sorted(r.split for r in halved) == ["test"] * 3 + ["train"] + ["val"] * 2


def test_paired_val_rows_carry_the_source_pair(paired_ingested: Path) -> None:
    datasets = read_paired_datasets(paired_ingested / "paired")
    rows = plan_paired_crops(datasets, PairsConfig(val_crop_px=32, min_texture=0.0))
    assert rows and {r["family"] for r in rows} <= {"gopro", "tiny"}
    for row in rows:
        source = json.loads(row["pair_params"])
        assert source["dataset"] == row["family"] and row["pair_id"].startswith(f"val/{row['family']}/")
        assert row["file"].startswith("paired/") and row["blurred_file"].startswith("paired/")
    with pytest.raises(ValueError, match=r"pairs: paired dataset\(s\) \['motion'\] are named like blur families"):
        plan_paired_crops({"motion": datasets["tiny"]}, PairsConfig())


def test_real_pairs_join_the_val_shards(
    ray_session: None, skimage_ingested: Path, paired_ingested: Path, tmp_path: Path
) -> None:
    # The photos and the paired datasets side by side, as the ingest stage writes them.
    ingested = tmp_path / "ingested"
    ingested.mkdir()
    for entry in skimage_ingested.iterdir():
        (ingested / entry.name).symlink_to(entry)
    (ingested / "paired").symlink_to(paired_ingested / "paired")
    datasets = read_paired_datasets(ingested / "paired")
    pairs = PairsConfig(val_crop_px=32, test_crop_px=64, test_crops_per_image=1, min_texture=0.0, num_actors=1)
    counts = write_pairs(read_manifest(ingested), ingested, str(tmp_path / "out"), pairs, DEGRADE, datasets)
    real = plan_paired_crops(datasets, pairs)
    val = pq.read_table(tmp_path / "out" / "val").to_pylist()
    assert counts["val"] == len(plan_crops(read_manifest(ingested), "val", pairs)) + len(real)
    rows = [r for r in val if r["family"] not in FAMILIES]
    assert len(rows) == len(real) > 0
    by_id = {(d, r.pair_id): r for d, records in datasets.items() for r in records}
    for row in rows:  # cut at one place from both ingested images, nothing synthesised; params name the source pair
        source = json.loads(row["params"])
        record = by_id[(source["dataset"], source["pair"])]
        assert record.split == "val" and (source["blurred"], source["sharp"]) == (record.source_blurred,
                                                                                   record.source_sharp[0])  # fmt: skip
        box = np.s_[source["top"] : source["top"] + source["size"], source["left"] : source["left"] + source["size"]]
        sharp = read_png(ingested / "paired" / record.sharp[0])[box]
        blurred = read_png(ingested / "paired" / record.blurred)[box]
        assert np.array_equal(decode_png(row["sharp"]), sharp) and np.array_equal(decode_png(row["blurred"]), blurred)
    assert all(r["family"] in FAMILIES for r in pq.read_table(tmp_path / "out" / "test").to_pylist())
    decoded = decode_pairs({k: np.array([r[k] for r in val], dtype=object) for k in ("sharp", "blurred", "family")})
    assert (decoded["family_index"] == PAIRED_SLOT).sum() == len(real)


def test_stream_mixes_real_pairs_by_share(skimage_ingested: Path, paired_ingested: Path, tmp_path: Path) -> None:
    ingested = tmp_path / "ingested"
    ingested.mkdir()
    for entry in skimage_ingested.iterdir():
        (ingested / entry.name).symlink_to(entry)
    (ingested / "paired").symlink_to(paired_ingested / "paired")
    datasets = read_paired_datasets(ingested / "paired")  # as the train stage reads them
    records = read_manifest(ingested)
    plan = make_plan(records, ingested, 32, 3, 200, DEGRADE, paired=datasets, paired_share=0.5,
                     paired_datasets=("tiny",))  # fmt: skip
    recipes = [draw_row(plan, i) for i in range(200)]
    real = [r for r in recipes if r.blurred_file is not None]
    assert 70 < len(real) < 130 and {r.family for r in real} == {"tiny"}
    assert {r.family for r in recipes if r.blurred_file is None} <= {"none", *DEGRADE.train_families}
    maker = TrainPairMaker(plan, read_photos(plan))
    out = maker({"id": np.arange(200, dtype=np.int64)})
    for i, recipe in enumerate(recipes):
        if recipe.blurred_file is not None:
            box = np.s_[recipe.top : recipe.top + 32, recipe.left : recipe.left + 32]
            assert np.array_equal(out["sharp"][i].transpose(1, 2, 0), read_png(ingested / recipe.file)[box])
            assert np.array_equal(out["blurred"][i].transpose(1, 2, 0), read_png(ingested / recipe.blurred_file)[box])
    synthetic = [i for i, r in enumerate(recipes) if r.blurred_file is None][:8]
    alone = maker({"id": np.array(synthetic, dtype=np.int64)})  # a synthetic row is the same in a mixed batch
    assert np.array_equal(alone["sharp"], out["sharp"][synthetic])
    with pytest.raises(ValueError, match=r"ingested/paired: train.paired_share is 0.5 but the paired dataset\(s\) "
                                         r"\['gopro2'\] were not ingested"):  # fmt: skip
        make_plan(
            records, ingested, 32, 3, 200, DEGRADE, paired=datasets, paired_share=0.5, paired_datasets=("gopro2",)
        )
    with pytest.raises(ConfigError, match=r"train\.paired_datasets"):
        TrainConfig(paired_datasets=("tiny",))


class Halve(nn.Module):
    """A network that darkens: its scores differ from the input's by a known amount. By 0.4, not 0.5: a half grey
    level would be a rounding tie, which blended tiles break either way."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image * 0.4


def test_whole_image_scores_with_the_protocol_tiled_or_not(paired_ingested: Path) -> None:
    root = paired_ingested / "paired"
    datasets = read_paired_datasets(root)
    whole = evaluate_paired(Halve(), root, datasets, EvaluateConfig(tile_px=512))
    tiled = evaluate_paired(Halve(), root, datasets, EvaluateConfig(tile_px=32, overlap_px=8))
    assert whole["gopro"]["protocol"] == "gopro_hide" and whole["tiny"]["protocol"] == "generic"
    record = next(r for r in datasets["gopro"] if r.split == "test")
    blurred, sharp = (torch.from_numpy(read_png(root / f).copy()).permute(2, 0, 1)[None].float() / 255
                      for f in (record.blurred, record.sharp[0]))  # fmt: skip
    image = whole["gopro"]["images"][record.pair_id]
    assert image["psnr_rgb8"] == pytest.approx(float(psnr_rgb8(blurred * 0.4, sharp)[0]), abs=1e-4)
    assert image["ssim_matlab"] == pytest.approx(float(ssim_matlab(blurred * 0.4, sharp)[0]), abs=1e-4)
    assert image["blurred_psnr_rgb8"] == pytest.approx(float(psnr_rgb8(blurred, sharp)[0]), abs=1e-4)
    assert whole["tiny"]["n"] == 3 and whole["tiny"]["psnr"] < whole["tiny"]["blurred_psnr"]
    for dataset in whole:  # a pointwise network: tiles blend back to the whole image
        assert tiled[dataset]["psnr"] == pytest.approx(whole[dataset]["psnr"], abs=1e-3)
    capped = evaluate_paired(Halve(), root, datasets, EvaluateConfig(paired_max_images=1))
    assert capped["tiny"]["n"] == 1


def test_report_has_a_column_per_paired_dataset() -> None:
    family = {"held_out": False, "group": "in_family", "n": 1, "images": {"p": {"psnr": 20.0, "ssim": 0.5}}}
    held = family | {"held_out": True, "group": "held_out"}
    real = {"protocol": "gopro_hide", "headline": ["psnr_rgb8", "ssim_matlab"], "n": 1,
            "images": {"test/a.png": {"psnr_rgb8": 25.0, "ssim_matlab": 0.8, "blurred_psnr_rgb8": 22.0,
                                      "blurred_ssim_matlab": 0.7}}}  # fmt: skip
    run = {"parameters": 1, "seconds_per_image": 0.1, "model": {"version": "1"},
           "families": {"gaussian": family, "motion": held}, "datasets": {"gopro": real}}  # fmt: skip
    classical = {"blurred": {"seconds_per_image": 0.0, "families": {"gaussian": family, "motion": held}}}
    study = StudyConfig(variants=("bdirnet",), seeds=(0,), promote_variant="bdirnet", picture_variants=("bdirnet",))
    report = build({"bdirnet": [run]}, classical, study, ["motion"])
    assert report["variants"]["bdirnet"]["datasets"]["gopro"]["psnr"] == 25.0
    assert report["variants"]["blurred"]["datasets"]["gopro"]["psnr"] == 22.0
    markdown = render_markdown(report, "t")
    header = next(line for line in markdown.splitlines() if line.startswith("| variant | gaussian"))
    assert "gopro (real, gopro_hide)" in header
    assert "| bdirnet | 20.00 ± 0.00 | 20.00 ± 0.00 | 25.00 ± 0.00 |" in markdown


def ingest_stage(raw_root: Path, paired_root: Path, out: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"ingest": {**dataclasses.asdict(RULES), "dataset": "photos"}}))
    command = [sys.executable, "pipelines/ingest.py", "--params", str(params), "--raw-root", str(raw_root),
               "--paired-root", str(paired_root), "--out", str(out)]  # fmt: skip
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_ingest_stage_takes_the_paired_root_and_names_a_bad_folder(tmp_path: Path) -> None:
    """Photos and data/raw/paired/ in one ingest; a folder there in no layout stops it with one line naming it."""
    photos = tmp_path / "raw" / "photos"
    photos.mkdir(parents=True)
    for index, name in enumerate(("astronaut", "coffee", "chelsea")):
        Image.fromarray(sharp_photo(index)).resize((160, 120)).save(photos / f"{name}.png")
    paired = tmp_path / "raw" / "paired"
    make_generic(paired / "mine")
    (paired / "README.md").write_text("kept in git\n")
    result = ingest_stage(tmp_path / "raw", paired, tmp_path / "ingested", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ingest: paired " in result.stdout and "(generic layout): 3 pairs {'mine': {'test': 3}}" in result.stdout
    assert sorted(read_paired_datasets(tmp_path / "ingested" / "paired")) == ["mine"]
    (paired / "stray").mkdir()
    Image.fromarray(sharp_photo(0)).save(paired / "stray" / "x.png")
    result = ingest_stage(tmp_path / "raw", paired, tmp_path / "again", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {paired / 'stray'}: no paired layout recognised; expected one of: " + "; ".join(LAYOUTS.values())
    ]


def test_val_metrics_count_real_pairs_apart_from_the_groups() -> None:
    from bdirnet.training import ValSums, val_metrics

    n = len(VAL_SLOTS)
    restored, blurred, count = np.zeros(n), np.zeros(n), np.zeros(n)
    gaussian = VAL_SLOTS.index("gaussian")
    restored[[gaussian, PAIRED_SLOT]], blurred[[gaussian, PAIRED_SLOT]] = (30.0, 20.0), (28.0, 21.0)
    count[[gaussian, PAIRED_SLOT]] = 1.0
    sums = ValSums.from_vector(ValSums(restored, blurred, count).vector())
    metrics = val_metrics(sums, DEGRADE)
    assert metrics["val_psnr"] == 25.0 and metrics["val_psnr_paired"] == 20.0 and metrics["val_gain_paired"] == -1.0
    assert metrics["val_gain_in_family"] == 2.0  # the real pairs are not a zoo family


@pytest.mark.parametrize(
    ("layout", "pair_id", "scene"),
    [
        ("gopro", "train/GOPR0372_07_00/blur/000047.png", "train/GOPR0372_07_00"),
        ("realblur", "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene003/blur/blur_1.png",
         "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene003"),
        ("hide", "train/1fromGOPR0950.MP4.png", "GOPR0950"),
        ("kohler", "Blurry3_7.png", "Blurry3"),
        ("generic", "train/blur/street/b.png", "train/blur/street/b.png"),
    ],
)  # fmt: skip
def test_scenes_group_the_frames_of_one_recording(layout: str, pair_id: str, scene: str) -> None:
    assert scene_of(layout, pair_id) == scene


def test_realblur_and_kohler_test_sets_use_their_protocols(tmp_path: Path) -> None:
    """RealBlur's least-squares scaling undoes a network that halves the image; Köhler takes every recorded frame."""
    make_realblur(tmp_path / "raw" / "realblur")
    make_kohler(tmp_path / "raw" / "kohler")
    ingest_paired_root(tmp_path / "raw", tmp_path / "paired", RULES)
    datasets = read_paired_datasets(tmp_path / "paired")
    scores = evaluate_paired(Halve(), tmp_path / "paired", datasets, EvaluateConfig())
    assert {name: (s["protocol"], s["n"]) for name, s in scores.items()} == {
        "kohler": ("kohler", 4), "realblur_j": ("realblur", 2), "realblur_r": ("realblur", 1)
    }  # fmt: skip
    for name in ("realblur_j", "realblur_r"):
        assert scores[name]["psnr"] == scores[name]["realblur_psnr"]
        assert scores[name]["psnr"] == pytest.approx(scores[name]["blurred_psnr"], abs=0.2)
    record = next(r for r in datasets["kohler"] if r.split == "test")
    assert len(record.sharp) == 3 and scores["kohler"]["headline"] == ["kohler_psnr", "kohler_ssim"]
