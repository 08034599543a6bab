"""Raw sharp datasets: the bundled scikit-image photos, validation of every file, and the split.

A dataset is a folder of sharp photos under ``data/raw/<name>/`` (DVC-tracked). :func:`ingest_folder`
decodes and validates every file, converts what can be converted (16-bit, RGBA/LA, palette, CMYK,
grayscale, EXIF orientation) to 8-bit RGB PNG, quarantines what cannot (empty, not an image, truncated, too
small, decompression bomb) with one line each in a report, and splits the good ones into train/val/test by
scene: near-duplicates (same perceptual hash within :data:`bdirnet.texture.NEAR_DUPLICATE_BITS`) form one group,
and groups fill test, then val, in a salted ``crc32`` order until each has its share (:func:`assign_splits`).
Every image's hashes, group and texture map (:func:`bdirnet.texture.texture_tiles`, from which the pairs stage
picks the val/test crops) are recorded in the manifest. A bad file never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bdirnet.config import IngestConfig
from bdirnet.images import BadImage, decode_image_file, save_png
from bdirnet.sources import METADATA_FILES
from bdirnet.texture import (
    NEAR_DUPLICATE_BITS,
    TILE_PX,
    TILE_STD_MIN,
    decode_tiles,
    encode_tiles,
    group_near_duplicates,
    perceptual_hashes,
    texture_tiles,
    textured_boxes,
)

__all__ = [
    "BadImage",
    "assign_splits",
    "check_split_sizes",
    "crop_boxes",
    "ingest_folder",
    "load_rgb8",
    "read_manifest",
]

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
    """One ingested image in the manifest.

    ``phash``: the 64-bit perceptual hashes of its views (hex; :func:`bdirnet.texture.perceptual_hashes`);
    ``group``: its near-duplicate group, named by the group's smallest name; ``texture``: its texture map
    (:func:`bdirnet.texture.encode_tiles`). The three are empty in manifests written before they existed.
    """

    name: str
    file: str
    split: str
    width: int
    height: int
    sha256: str
    converted: list[str] = field(default_factory=list)
    phash: list[str] = field(default_factory=list)
    group: str = ""
    texture: str = ""


@dataclass
class IngestReport:
    images: list[ImageRecord]
    quarantined: dict[str, str]

    def counts(self) -> dict[str, int]:
        return {split: sum(r.split == split for r in self.images) for split in SPLITS}


def assign_splits(
    groups: Mapping[str, str], rules: IngestConfig, eligible: Mapping[str, bool] | None = None
) -> dict[str, str]:
    """Every name's split, whole near-duplicate groups at a time.

    Groups are walked in the order of ``crc32(split_salt + group name)`` and fill test until it holds
    ``test_percent`` of all photos (rounded), then val up to ``val_percent``; the rest is train. A group is never
    split, so a split overshoots its share by less than its last group. Deterministic, within a photo of the
    percentages when groups are single photos, and stable: adding or removing a photo moves only the groups at
    the edges of the quotas. A group none of whose photos is ``eligible`` (too small for a val/test crop) goes to
    train: it could not be measured on.

    Args:
        groups: every name's group (:func:`bdirnet.texture.group_near_duplicates`).
        rules: the ingest rules (percentages and salt).
        eligible: per name, whether it may be in val/test (default: every name).
    """
    members: dict[str, list[str]] = {}
    for name, group in groups.items():
        members.setdefault(group, []).append(name)
    total = len(groups)
    targets = {"test": (total * rules.test_percent + 50) // 100, "val": (total * rules.val_percent + 50) // 100}
    counts = dict.fromkeys(targets, 0)
    splits: dict[str, str] = {}
    for group in sorted(members, key=lambda g: (zlib.crc32((rules.split_salt + g).encode()), g)):
        size = len(members[group])
        measurable = eligible is None or any(eligible[name] for name in members[group])
        split = next((s for s in ("test", "val") if measurable and counts[s] < targets[s]), "train")
        if split != "train":
            counts[split] += size
        splits.update(dict.fromkeys(members[group], split))
    return splits


def check_split_sizes(counts: Mapping[str, int], rules: IngestConfig, raw_dir: Path) -> None:
    """Refuse a split whose test or val part is too small to measure anything.

    Raises:
        ValueError: naming the dataset folder, the counts and the ``ingest`` key to lower.
    """
    for split, key in (("test", "min_test_photos"), ("val", "min_val_photos")):
        minimum = getattr(rules, key)
        if counts[split] < minimum:
            raise ValueError(
                f"{raw_dir}: the {split} split has {counts[split]} photos (train {counts['train']}, val "
                f"{counts['val']}, test {counts['test']}), fewer than ingest.{key} = {minimum}; add photos, or lower "
                f"ingest.{key} for a small dataset"
            )


def crop_boxes(record: ImageRecord, crop_px: int, count: int, min_texture: float) -> list[tuple[int, int, int]]:
    """The val/test crops ``(top, left, size)`` of one ingested image, chosen from its texture map alone
    (:func:`bdirnet.texture.textured_boxes`); empty when no box qualifies or the image is smaller than a crop.

    Raises:
        ValueError: the record has no texture map (a manifest from before texture maps: re-run ingest).
    """
    if not record.texture:
        raise ValueError(f"{record.name}: the manifest has no texture map for this image (re-run the ingest stage)")
    return textured_boxes(decode_tiles(record.texture), crop_px, count, min_texture)


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

    Writes ``out_dir/manifest.json`` (every image with its split, hashes, group and texture map; the groups of
    near-duplicates) and ``out_dir/quarantine.txt`` (one line per rejected file: ``<name>: <reason>``); rejected
    files are copied to ``out_dir/quarantine/``.

    Raises:
        ValueError: test or val has fewer photos than ``rules.min_test_photos`` / ``min_val_photos`` (after
            the manifest is written, so the split can be looked at).
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
    # Hidden files, and the metadata a photo folder carries (SOURCES.json, REJECTED.txt), are not photos.
    files = sorted(
        p for p in raw_dir.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name not in METADATA_FILES
    )
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
        save_png(array, images_dir / file_name)
        records.append(
            ImageRecord(
                name=name,
                file=f"images/{file_name}",
                split="",  # set below, once every image's near-duplicate group is known
                width=int(array.shape[1]),
                height=int(array.shape[0]),
                sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                converted=notes,
                phash=[f"{h:016x}" for h in perceptual_hashes(array)],
                texture=encode_tiles(texture_tiles(array)),
            )
        )
    groups = group_near_duplicates({r.name: [int(h, 16) for h in r.phash] for r in records})
    eligible = {r.name: min(r.width, r.height) >= rules.eval_min_side_px for r in records}
    splits = assign_splits(groups, rules, eligible)
    for record in records:
        record.group, record.split = groups[record.name], splits[record.name]
    members: dict[str, list[str]] = {}
    for record in records:
        members.setdefault(record.group, []).append(record.name)
    report = IngestReport(images=records, quarantined=quarantined)
    # The size checks change no output: left out of the recorded rules, so lowering them reuses the ingest.
    recorded = {k: v for k, v in asdict(rules).items() if k not in ("min_test_photos", "min_val_photos")}
    manifest = {
        "source": str(raw_dir),
        "rules": recorded,
        "hash_rule": {
            "views": "full, centred 90/80 %, corner 90 % x4, centred square",
            "max_bits": NEAR_DUPLICATE_BITS,
        },
        "texture_rule": {"tile_px": TILE_PX, "tile_gradient_std_min": TILE_STD_MIN},
        "counts": report.counts(),
        "near_duplicate_groups": {g: names for g, names in sorted(members.items()) if len(names) > 1},
        "images": [asdict(r) for r in records],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    lines = [f"{name}: {reason}" for name, reason in sorted(quarantined.items())]
    (out_dir / "quarantine.txt").write_text("".join(line + "\n" for line in lines))
    check_split_sizes(report.counts(), rules, raw_dir)
    return report


def read_manifest(ingested_dir: Path) -> list[ImageRecord]:
    """The images of an ingested dataset, with their splits."""
    path = ingested_dir / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the ingest manifest ({error})") from None
    if data.get("kind") == "paired":
        raise ValueError(
            f"{path}: a paired dataset's manifest (bdirnet.paired): ingest.dataset names the sharp photos the zoo "
            "blurs; put paired datasets under data/raw/paired/<name>/ (README: Train and evaluate on GoPro / RealBlur)"
        )
    return [ImageRecord(**item) for item in data["images"]]
