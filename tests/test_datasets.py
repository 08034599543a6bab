"""Ingest: every kind of bad file is converted or quarantined with one clear line; good files go through."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bdirnet.config import IngestConfig
from bdirnet.datasets import BUNDLED_PHOTOS, bundle_skimage_photos, ingest_folder, load_rgb8, read_manifest, split_of

RULES = IngestConfig(min_side_px=64, max_pixels=2_000_000)


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
        for record in report.images:
            with Image.open(tmp_path / "out" / record.file) as image:
                assert image.mode == "RGB" and image.size == (record.width, record.height)
        sixteen = np.asarray(Image.open(tmp_path / "out" / by_name["sixteen.png"].file))
        assert np.abs(sixteen[..., 0].astype(int) - photo_array()[..., 0]).max() <= 1

    def test_manifest_and_split(self, messy_folder: Path, tmp_path: Path) -> None:
        ingest_folder(messy_folder, tmp_path / "out", RULES)
        records = read_manifest(tmp_path / "out")
        assert all(r.split == split_of(r.name, RULES) for r in records)
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert sum(manifest["counts"].values()) == len(records) == 7

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
    report = ingest_folder(tmp_path / "skimage", tmp_path / "out", IngestConfig())
    assert report.quarantined == {}
    assert report.counts() == {"train": 9, "val": 2, "test": 4}
    # Adding a photo never moves the others between splits.
    shutil.copy(copied[0], tmp_path / "skimage" / "extra.png")
    again = ingest_folder(tmp_path / "skimage", tmp_path / "out2", IngestConfig())
    before = {r.name: r.split for r in report.images}
    assert all(before[r.name] == r.split for r in again.images if r.name in before)
