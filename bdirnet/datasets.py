"""Raw sharp datasets: the bundled scikit-image photos, validation of every file, and the split.

A dataset is a folder of sharp photos under ``data/raw/<name>/`` (DVC-tracked). :func:`ingest_folder`
decodes and validates every file, converts what can be converted (16-bit, RGBA/LA, palette, CMYK,
grayscale, EXIF orientation) to 8-bit RGB PNG, quarantines what cannot (empty, not an image, truncated, too
small, decompression bomb) with one line each in a report, and splits the good ones into train/val/test by
``crc32(name)`` — stable when files are added or removed. A bad file never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bdirnet.config import IngestConfig
from bdirnet.images import BadImage, decode_image_file

__all__ = ["BadImage", "ingest_folder", "load_rgb8", "read_manifest", "split_of"]

SPLITS = ("train", "val", "test")

# The natural photos scikit-image installs (skimage/data): colour ones, and grayscale ones converted to RGB.
# Synthetic images (chessboard, logo, phantom, text, ...) are left out; clock_motion.png is a real
# motion-blurred photo without ground truth and is kept for qualitative checks, not for training.
BUNDLED_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
    "brick.png",
    "camera.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "moon.png",
)


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def copy_skimage_files(names: tuple[str, ...], destination: Path) -> list[Path]:
    """Copy files of the installed scikit-image's ``data`` folder into ``destination``."""
    source = skimage_data_dir()
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        path = source / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: scikit-image does not ship this photo (version mismatch?)")
        shutil.copyfile(path, destination / name)
        copied.append(destination / name)
    return copied


def bundle_skimage_photos(destination: Path) -> list[Path]:
    """Copy the bundled natural photos from the installed scikit-image into ``destination``."""
    return copy_skimage_files(BUNDLED_PHOTOS, destination)


REAL_BLUR_PHOTOS = ("clock_motion.png",)


def bundle_real_blur_photos(destination: Path) -> list[Path]:
    """Copy the real blurred photos scikit-image ships (no ground truth; viewed, never scored or trained on)."""
    return copy_skimage_files(REAL_BLUR_PHOTOS, destination)


@dataclass
class ImageRecord:
    """One ingested image in the manifest."""

    name: str
    file: str
    split: str
    width: int
    height: int
    sha256: str
    converted: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    images: list[ImageRecord]
    quarantined: dict[str, str]

    def counts(self) -> dict[str, int]:
        return {split: sum(r.split == split for r in self.images) for split in SPLITS}


def split_of(name: str, rules: IngestConfig) -> str:
    """Deterministic split by ``crc32(split_salt + name) % 100``: test below test_percent, then val, then train.

    The salt only picks which stable partition is used; the default puts 4 of the 15 bundled photos (3 in
    colour) in test, 2 in val, 9 in train, and both halves of the motorcycle stereo pair outside train.
    """
    bucket = zlib.crc32((rules.split_salt + name).encode()) % 100
    if bucket < rules.test_percent:
        return "test"
    if bucket < rules.test_percent + rules.val_percent:
        return "val"
    return "train"


def load_rgb8(path: Path, rules: IngestConfig) -> tuple[np.ndarray, list[str]]:
    """Decode and validate one file into an 8-bit RGB array (:func:`bdirnet.images.decode_image_file` with the
    ingest rules); returns the array and the conversions made.

    Raises:
        BadImage: empty, not an image, truncated, too small, or too many pixels (decompression bomb).
    """
    return decode_image_file(path, max_pixels=rules.max_pixels, min_side_px=rules.min_side_px)


def _output_name(name: str) -> str:
    return name.replace("/", "__") + ".png" if not name.endswith(".png") else name.replace("/", "__")


def ingest_folder(raw_dir: Path, out_dir: Path, rules: IngestConfig) -> IngestReport:
    """Validate every file under ``raw_dir`` and write the usable ones as RGB PNGs to ``out_dir/images``.

    Writes ``out_dir/manifest.json`` (every image with its split) and ``out_dir/quarantine.txt`` (one line
    per rejected file: ``<name>: <reason>``); rejected files are copied to ``out_dir/quarantine/``.
    """
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: raw dataset folder not found (dvc pull, or `dvc add` your photos)")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    images_dir = out_dir / "images"
    quarantine_dir = out_dir / "quarantine"
    images_dir.mkdir(parents=True)
    records: list[ImageRecord] = []
    quarantined: dict[str, str] = {}
    files = sorted(p for p in raw_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    used_names: set[str] = set()
    for path in files:
        name = path.relative_to(raw_dir).as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            # A file name that is not UTF-8 (it decoded with surrogate escapes): named safely, kept out.
            shown = os.fsencode(name).decode("utf-8", "backslashreplace")
            quarantined[shown] = "file name is not valid UTF-8 (rename the file)"
            quarantine_dir.mkdir(exist_ok=True)
            shutil.copyfile(path, quarantine_dir / f"non-utf8-{hashlib.sha256(os.fsencode(name)).hexdigest()[:12]}")
            continue
        try:
            array, notes = load_rgb8(path, rules)
        except BadImage as error:
            quarantined[name] = str(error)
            quarantine_dir.mkdir(exist_ok=True)
            shutil.copyfile(path, quarantine_dir / name.replace("/", "__"))
            continue
        file_name = _output_name(name)
        if file_name in used_names:  # a/b.png vs a__b.png, x.jpg vs x.jpg.png: never overwrite another image
            file_name = f"{file_name[:-4]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}.png"
            notes.append("output name collided with another file's; hash suffix added")
        used_names.add(file_name)
        Image.fromarray(array).save(images_dir / file_name, format="PNG")
        records.append(
            ImageRecord(
                name=name,
                file=f"images/{file_name}",
                split=split_of(name, rules),
                width=int(array.shape[1]),
                height=int(array.shape[0]),
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                converted=notes,
            )
        )
    report = IngestReport(images=records, quarantined=quarantined)
    manifest = {
        "source": str(raw_dir),
        "rules": asdict(rules),
        "counts": report.counts(),
        "images": [asdict(r) for r in records],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    lines = [f"{name}: {reason}" for name, reason in sorted(quarantined.items())]
    (out_dir / "quarantine.txt").write_text("".join(line + "\n" for line in lines))
    return report


def read_manifest(ingested_dir: Path) -> list[ImageRecord]:
    """The images of an ingested dataset, with their splits."""
    path = ingested_dir / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the ingest manifest ({error})") from None
    return [ImageRecord(**item) for item in data["images"]]
