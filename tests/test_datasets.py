"""Ingest: every kind of bad file is converted or quarantined with one clear line; good files go through."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bdirnet.config import IngestConfig
from bdirnet.datasets import (
    BUNDLED_PHOTOS,
    assign_splits,
    bundle_skimage_photos,
    ingest_folder,
    load_rgb8,
    read_manifest,
)
from bdirnet.texture import group_near_duplicates, perceptual_hashes

RULES = IngestConfig(min_side_px=64, max_pixels=2_000_000, min_test_photos=0, min_val_photos=0)
BUNDLED_RULES = IngestConfig(min_test_photos=4, min_val_photos=2)


def photo_array(size: tuple[int, int] = (96, 128)) -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[: size[0], : size[1]])


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    (folder / "nested").mkdir(parents=True)
    rgb = photo_array()
    Image.fromarray(rgb).save(folder / "good.png")
    Image.fromarray(rgb).save(folder / "nested" / "good.jpg", quality=95)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image at all")
    full = io.BytesIO()
    Image.fromarray(rgb).save(full, format="PNG")
    (folder / "truncated.png").write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    Image.fromarray(rgb[:40, :40]).save(folder / "tiny.png")
    Image.new("L", (2000, 1500)).save(folder / "bomb.png")  # 3 Mpx > max_pixels 2 Mpx
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated.save(folder / "exif.jpg", exif=exif)
    return folder


class TestIngest:
    def test_bad_files_quarantined_with_reasons(self, messy_folder: Path, tmp_path: Path) -> None:
        report = ingest_folder(messy_folder, tmp_path / "out", RULES)
        assert report.quarantined.keys() == {"empty.png", "notes.txt", "truncated.png", "tiny.png", "bomb.png"}
        assert "empty file" in report.quarantined["empty.png"]
        assert "not an image" in report.quarantined["notes.txt"]
        assert "truncated" in report.quarantined["truncated.png"]
        assert "too small: 40×40" in report.quarantined["tiny.png"]
        assert "decompression bomb" in report.quarantined["bomb.png"] and "3000000" in report.quarantined["bomb.png"]
        lines = (tmp_path / "out" / "quarantine.txt").read_text().splitlines()
        assert len(lines) == 5 and all(": " in line for line in lines)
        assert sorted(p.name for p in (tmp_path / "out" / "quarantine").iterdir()) == sorted(report.quarantined)

    def test_convertible_files_converted(self, messy_folder: Path, tmp_path: Path) -> None:
        report = ingest_folder(messy_folder, tmp_path / "out", RULES)
        by_name = {r.name: r for r in report.images}
        assert set(by_name) == {"good.png", "nested/good.jpg", "sixteen.png", "alpha.png", "palette.png",
                                "cmyk.jpg", "exif.jpg"}  # fmt: skip
        assert by_name["good.png"].converted == []
        assert "16-bit" in by_name["sixteen.png"].converted[0]
        assert "alpha composited" in by_name["alpha.png"].converted[0]
        assert "palette" in by_name["palette.png"].converted[0]
        assert "CMYK" in by_name["cmyk.jpg"].converted[0]
        assert "EXIF orientation 6" in by_name["exif.jpg"].converted[0]
        assert (by_name["exif.jpg"].width, by_name["exif.jpg"].height) == (96, 128)  # rotated upright
        # ... and turned the right way: orientation 6 is displayed 90° clockwise (JPEG: compare means, not bits).
        upright = np.asarray(Image.open(tmp_path / "out" / by_name["exif.jpg"].file)).astype(float)
        clockwise, counter = np.rot90(photo_array(), k=-1), np.rot90(photo_array(), k=1)
        assert np.abs(upright - clockwise).mean() < 6 < 20 < np.abs(upright - counter).mean()
        for record in report.images:
            with Image.open(tmp_path / "out" / record.file) as image:
                assert image.mode == "RGB" and image.size == (record.width, record.height)
        sixteen = np.asarray(Image.open(tmp_path / "out" / by_name["sixteen.png"].file))
        assert np.abs(sixteen[..., 0].astype(int) - photo_array()[..., 0]).max() <= 1

    def test_manifest_and_split(self, messy_folder: Path, tmp_path: Path) -> None:
        ingest_folder(messy_folder, tmp_path / "out", RULES)
        records = read_manifest(tmp_path / "out")
        assert all(len(r.phash) == 8 and all(len(h) == 16 for h in r.phash) and r.texture for r in records)
        groups = group_near_duplicates({r.name: [int(h, 16) for h in r.phash] for r in records})
        assert all(r.group == groups[r.name] for r in records)
        eligible = {r.name: min(r.width, r.height) >= RULES.eval_min_side_px for r in records}
        assert all(r.split == assign_splits(groups, RULES, eligible)[r.name] for r in records)
        # Every good file is the same astronaut crop, stored six ways (one group, one split) or turned upright by
        # its EXIF orientation (a rotated view, which the hash does not match).
        upright = sorted(r.name for r in records if r.name != "exif.jpg")
        assert {r.group for r in records} == {"alpha.png", "exif.jpg"}
        assert len({r.split for r in records if r.name != "exif.jpg"}) == 1
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert sum(manifest["counts"].values()) == len(records) == 7
        assert manifest["near_duplicate_groups"] == {"alpha.png": upright}

    def test_old_manifest_without_hashes_still_reads(self, messy_folder: Path, tmp_path: Path) -> None:
        ingest_folder(messy_folder, tmp_path / "out", RULES)
        path = tmp_path / "out" / "manifest.json"
        manifest = json.loads(path.read_text())
        for item in manifest["images"]:
            del item["phash"], item["group"], item["texture"]
        path.write_text(json.dumps(manifest))
        assert {r.group for r in read_manifest(tmp_path / "out")} == {""}

    def test_missing_folder_named(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match=r"nope: raw dataset folder not found"):
            ingest_folder(tmp_path / "nope", tmp_path / "out", RULES)

    def test_truncated_jpeg(self, tmp_path: Path) -> None:
        buffer = io.BytesIO()
        Image.fromarray(photo_array()).save(buffer, format="JPEG")
        path = tmp_path / "cut.jpg"
        path.write_bytes(buffer.getvalue()[:500])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            load_rgb8(path, RULES)


def test_bundled_photos_split_is_stable(tmp_path: Path) -> None:
    copied = bundle_skimage_photos(tmp_path / "skimage")
    assert len(copied) == len(BUNDLED_PHOTOS)
    report = ingest_folder(tmp_path / "skimage", tmp_path / "out", BUNDLED_RULES)
    assert report.quarantined == {}
    assert report.counts() == {"train": 9, "val": 2, "test": 4}
    splits = {r.name: r.split for r in report.images}
    assert sorted(n for n, s in splits.items() if s == "test") == [
        "chelsea.png", "motorcycle_left.png", "motorcycle_right.png", "rocket.jpg"]  # fmt: skip
    assert sorted(n for n, s in splits.items() if s == "val") == ["astronaut.png", "camera.png"]
    # The stereo pair is one group (found by the hash, not by name); every other photo is its own.
    groups = {r.name: r.group for r in report.images}
    assert {n: g for n, g in groups.items() if g != n} == {"motorcycle_right.png": "motorcycle_left.png"}
    # A copy of a photo joins its group and split; the other photos stay where they were.
    shutil.copy(tmp_path / "skimage" / "astronaut.png", tmp_path / "skimage" / "extra.png")
    again = {r.name: r for r in ingest_folder(tmp_path / "skimage", tmp_path / "out2", BUNDLED_RULES).images}
    assert again["extra.png"].group == "astronaut.png" and again["extra.png"].split == splits["astronaut.png"]
    assert all(again[name].split == split for name, split in splits.items())


def dead_leaves(seed: int, side: int = 96) -> np.ndarray:
    """A procedural photo-like image: random occluding discs, many small, few large (Achddou et al., 2021)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((side, side, 3))
    yy, xx = np.mgrid[:side, :side]
    for _ in range(120):
        radius = side * 0.5 * rng.random() ** 2 + 2
        cy, cx = rng.random(2) * side
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = rng.random(3)
    return (image * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synthetic_hashes() -> dict[str, list[int]]:
    return {f"leaves{seed:03d}.png": perceptual_hashes(dead_leaves(seed)) for seed in range(201)}


class TestSplitByScene:
    def test_percentages_hit_on_200_distinct_images(self, synthetic_hashes: dict[str, list[int]]) -> None:
        hashes = dict(sorted(synthetic_hashes.items())[:200])
        groups = group_near_duplicates(hashes)
        assert len(set(groups.values())) >= 196  # distinct scenes are (nearly) never grouped
        for salt in ("37:", "1:", "x"):
            splits = assign_splits(groups, IngestConfig(split_salt=salt))
            counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
            assert abs(counts["test"] - 50) <= 1 and abs(counts["val"] - 30) <= 1, (salt, counts)
            assert splits == assign_splits(dict(reversed(groups.items())), IngestConfig(split_salt=salt))

    def test_photos_too_small_for_a_crop_go_to_train(self, synthetic_hashes: dict[str, list[int]]) -> None:
        """A group none of whose photos can hold a val/test crop is not measurable: train; the quotas fill from
        the others."""
        groups = group_near_duplicates(dict(sorted(synthetic_hashes.items())[:200]))
        eligible = {name: index % 2 == 0 for index, name in enumerate(sorted(groups))}
        splits = assign_splits(groups, IngestConfig(), eligible)
        measurable = {groups[name] for name, ok in eligible.items() if ok}
        assert all(splits[name] == "train" for name in groups if groups[name] not in measurable)
        assert sum(not ok and splits[name] != "train" for name, ok in eligible.items()) <= 4  # only via a group
        counts = {s: sum(v == s for v in splits.values()) for s in ("val", "test")}
        assert abs(counts["test"] - 50) <= 1 and abs(counts["val"] - 30) <= 1, counts

    def test_adding_a_photo_moves_few_others(self, synthetic_hashes: dict[str, list[int]]) -> None:
        full = group_near_duplicates(synthetic_hashes)
        fewer = {name: group for name, group in full.items() if name != "leaves200.png"}
        before, after = assign_splits(fewer, IngestConfig()), assign_splits(full, IngestConfig())
        assert sum(before[name] != after[name] for name in before) <= 2

    def test_near_duplicates_land_in_one_split_and_no_group_in_two(self, tmp_path: Path) -> None:
        from tests.test_texture import near_duplicates

        raw = tmp_path / "raw"
        raw.mkdir()
        bundle_skimage_photos(raw)
        for source in ("coffee.png", "rocket.jpg"):
            original = np.asarray(Image.open(raw / source).convert("RGB"))
            for kind, copy in near_duplicates(original).items():
                Image.fromarray(copy).save(raw / f"{source[:-4]}_{kind}.png")
        report = ingest_folder(raw, tmp_path / "out", RULES)
        by_name = {r.name: r for r in report.images}
        for source in ("coffee.png", "rocket.jpg"):
            family = [r for r in report.images if r.name.startswith(source[:-4])]
            assert len(family) == 6 and {r.group for r in family} == {source}, [(r.name, r.group) for r in family]
            assert len({r.split for r in family}) == 1
        assert by_name["coffee.png"].group != by_name["rocket.jpg"].group
        split_of_group: dict[str, set[str]] = {}
        for record in report.images:
            split_of_group.setdefault(record.group, set()).add(record.split)
        assert all(len(splits) == 1 for splits in split_of_group.values())
        assert len(split_of_group) == len(BUNDLED_PHOTOS) - 1  # the sources' copies added no group

    def test_too_few_test_or_val_photos_is_a_clear_error(self, tmp_path: Path) -> None:
        bundle_skimage_photos(tmp_path / "skimage")
        with pytest.raises(ValueError, match=r"skimage: the test split has 4 photos .*ingest.min_test_photos = 60"):
            ingest_folder(tmp_path / "skimage", tmp_path / "out", IngestConfig())
        assert (tmp_path / "out" / "manifest.json").is_file()  # written first, to look at the split
        with pytest.raises(ValueError, match=r"the val split has 2 photos .*lower ingest.min_val_photos"):
            ingest_folder(tmp_path / "skimage", tmp_path / "out", IngestConfig(min_test_photos=4, min_val_photos=3))


def test_exif_rotation_gives_the_known_upright_pixels(tmp_path: Path) -> None:
    """Orientation 6 means "rotate 90° clockwise to display": the stored image is the upright one turned
    counter-clockwise. The ingested pixels must equal the upright original exactly (PNG, lossless)."""
    upright = photo_array((96, 128))
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # what the camera wrote
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "phone.png", exif=exif)
    pixels, notes = load_rgb8(tmp_path / "phone.png", RULES)
    assert notes == ["EXIF orientation 6 applied"] and np.array_equal(pixels, upright)


def test_corrupt_exif_is_noted_not_fatal(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photo_array()).save(buffer, format="JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "bad_exif.jpg").write_bytes(buffer.getvalue())
    Image.fromarray(photo_array()).save(tmp_path / "raw" / "fine.png")
    report = ingest_folder(tmp_path / "raw", tmp_path / "out", RULES)
    assert {r.name for r in report.images} == {"bad_exif.jpg", "fine.png"} and not report.quarantined


def test_non_utf8_name_is_quarantined_and_the_rest_ingested(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.fromarray(photo_array()).save(raw / "fine.png")
    Image.fromarray(photo_array()).save(os.fsdecode(os.fsencode(str(raw)) + b"/caf\xe9.png"))
    report = ingest_folder(raw, tmp_path / "out", RULES)
    assert [r.name for r in report.images] == ["fine.png"]
    assert list(report.quarantined) == ["caf\\xe9.png"] and "not valid UTF-8" in report.quarantined["caf\\xe9.png"]
    json.loads((tmp_path / "out" / "manifest.json").read_text())  # still valid JSON


def test_colliding_output_names_never_overwrite(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    first, second, third = photo_array(), photo_array()[::-1].copy(), photo_array()[:, ::-1].copy()
    Image.fromarray(first).save(raw / "a" / "b.png")
    Image.fromarray(second).save(raw / "a__b.png")
    Image.fromarray(third).save(raw / "x.jpg.png")
    Image.fromarray(first).save(raw / "x.jpg", quality=95)
    report = ingest_folder(raw, tmp_path / "out", RULES)
    files = [r.file for r in report.images]
    assert len(files) == len(set(files)) == 4
    by_name = {r.name: np.asarray(Image.open(tmp_path / "out" / r.file)) for r in report.images}
    assert np.array_equal(by_name["a/b.png"], first) and np.array_equal(by_name["a__b.png"], second)
    assert np.array_equal(by_name["x.jpg.png"], third)


def test_float_tiff_and_low_valued_16_bit_png_keep_their_brightness(tmp_path: Path) -> None:
    gray = photo_array()[..., 0]
    Image.fromarray(gray.astype(np.float32) / 255.0, mode="F").save(tmp_path / "float.tif")
    float_pixels, notes = load_rgb8(tmp_path / "float.tif", RULES)
    assert np.abs(float_pixels[..., 0].astype(int) - gray).max() <= 1, notes
    dark = (gray // 2).astype(np.uint16)  # a dark 16-bit image: every value <= 255, still 16-bit
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    dark_pixels, notes = load_rgb8(tmp_path / "dark16.png", RULES)
    assert int(dark_pixels.max()) <= 1 and "16-bit" in notes[0]  # 127/65535 of full scale: near black, not 257x
