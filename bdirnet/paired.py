"""Paired benchmark datasets: blurred/sharp pairs recognised by their folder layout, validated and quarantined.

A paired dataset is a folder under ``data/raw/<name>/`` in one of these layouts (:data:`LAYOUTS`), recognised by its
structure, never by its name:

- ``gopro``: ``train|test/<sequence>/blur|blur_gamma|sharp/*.png`` (GOPRO_Large); ``blur/<n>`` pairs with
  ``sharp/<n>`` (``blur_gamma`` only when asked for: the published tables use ``blur``).
- ``hide``: ``train/*.png`` and ``test/<subset>/*.png`` (``test-close-ups``, ``test-long-shot``), each paired with
  ``GT/<same name>``; when ``train.txt`` / ``test.txt`` lie beside them, they name the split's blurred files (one
  file name or path under the split folder per line) and a file they leave out is not used.
- ``realblur``: ``RealBlur_J_train_list.txt``, ``RealBlur_J_test_list.txt`` (and/or the ``RealBlur_R_`` ones), each
  line ``<gt path> <blur path>`` relative to the folder (``RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene003/
  gt/gt_1.png ...blur/blur_1.png``); datasets ``realblur_j`` and ``realblur_r``.
- ``kohler``: Köhler et al. 2012, 4 images × 12 recorded camera shakes: ``Blurry<i>_<k>.png`` with the sharp frames
  recorded along that shake, ``GroundTruth<i>_<k>_<frame>.png`` (anywhere below the folder); test only.
- ``generic``: ``blur/`` and ``sharp/`` with matching names (relative path without extension) — a test set; or
  ``train|val|test/blur/`` + ``train|val|test/sharp/`` for those splits. The dataset is named after the folder.

:func:`scan_pairs` lists the pairs (and the files that lack a partner); :func:`ingest_pairs` decodes every file
of every pair with the one validated decoder (:func:`bdirnet.images.decode_image_file`, the ingest rules),
quarantines a bad pair with one line (undecodable, sizes differ, partner missing) and writes the good pairs and a
manifest. A bad pair never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bdirnet.config import IngestConfig
from bdirnet.datasets import BadImage, load_rgb8
from bdirnet.images import save_png
from bdirnet.texture import encode_tiles, texture_tiles

__all__ = [
    "LAYOUTS",
    "LayoutError",
    "PairRecord",
    "PairScan",
    "PairedImage",
    "PairedIngestReport",
    "carve_val",
    "detect_layout",
    "ingest_paired_root",
    "ingest_pairs",
    "looks_paired",
    "read_paired_datasets",
    "read_paired_manifest",
    "scan_pairs",
    "scene_of",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
SPLITS = ("train", "val", "test")
PAIRED_MANIFEST_KIND = "paired"

LAYOUTS: dict[str, str] = {
    "gopro": "GoPro: train|test/<sequence>/blur|sharp/*.png",
    "hide": "HIDE: train/*.png and test/<subset>/*.png with GT/<same name>",
    "realblur": "RealBlur: RealBlur_J_train_list.txt / ..._test_list.txt (or RealBlur_R_) mapping gt/ to blur/",
    "kohler": "Köhler: Blurry<i>_<k>.png with GroundTruth<i>_<k>_<frame>.png",
    "generic": "generic: blur/ and sharp/ with matching names (or train|val|test/blur + sharp)",
}
"""Every paired layout, by name, with what a folder in that layout holds (error messages quote these)."""

REALBLUR_LISTS = {
    "RealBlur_J_train_list.txt": ("realblur_j", "train"),
    "RealBlur_J_test_list.txt": ("realblur_j", "test"),
    "RealBlur_R_train_list.txt": ("realblur_r", "train"),
    "RealBlur_R_test_list.txt": ("realblur_r", "test"),
}
KOHLER_BLURRED = re.compile(r"^Blurry(\d+)_(\d+)$")
KOHLER_SHARP = re.compile(r"^GroundTruth(\d+)_(\d+)_(\d+)$")


class LayoutError(ValueError):
    """A folder that is in no paired layout, or in more than one; the message names the folder and the layouts."""


@dataclass(frozen=True)
class PairedImage:
    """One pair of a paired dataset, as found on disk.

    ``sharp`` holds one file, or for Köhler every sharp frame recorded along the shake (scored by the best one).
    ``pair_id`` is the blurred file's path relative to the dataset folder: unique and stable.
    """

    dataset: str
    split: str
    pair_id: str
    blurred: Path
    sharp: tuple[Path, ...]


@dataclass
class PairScan:
    """The pairs of a paired folder and the files without a partner (``relative path: reason``)."""

    root: Path
    layout: str
    pairs: list[PairedImage]
    orphans: dict[str, str] = field(default_factory=dict)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p)) if folder.is_dir() else []


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _stem_key(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def _split_dirs(root: Path) -> list[Path]:
    return [root / s for s in SPLITS if (root / s).is_dir()]


def _gopro_sequences(root: Path) -> list[Path]:
    return [
        seq
        for split in _split_dirs(root)
        for seq in sorted(split.iterdir())
        if seq.is_dir() and (seq / "sharp").is_dir() and ((seq / "blur").is_dir() or (seq / "blur_gamma").is_dir())
    ]


def _kohler_files(root: Path) -> list[Path]:
    return [p for p in _images(root) if KOHLER_BLURRED.match(p.stem) or KOHLER_SHARP.match(p.stem)]


def _generic_bases(root: Path) -> list[Path]:
    return [base for base in (root, *_split_dirs(root)) if (base / "blur").is_dir() and (base / "sharp").is_dir()]


def _matching_layouts(root: Path) -> list[str]:
    found = []
    if _gopro_sequences(root):
        found.append("gopro")
    if (root / "GT").is_dir() and ((root / "train").is_dir() or (root / "test").is_dir()):
        found.append("hide")
    if any((root / name).is_file() for name in REALBLUR_LISTS):
        found.append("realblur")
    if any(KOHLER_BLURRED.match(p.stem) for p in _kohler_files(root)):
        found.append("kohler")
    if _generic_bases(root):
        found.append("generic")
    return found


def looks_paired(root: Path) -> bool:
    """Whether ``root`` is, or tries to be, a paired folder: it is in a layout, or it has a ``blur``, ``sharp`` or
    ``GT`` folder or a RealBlur list. A folder of sharp photos (split folders included) is not; a
    folder that looks paired must be in exactly one layout (:func:`detect_layout`)."""
    if any((root / name).is_dir() for name in ("blur", "sharp", "GT")):
        return True
    return bool(_matching_layouts(root)) or any((root / name).is_file() for name in REALBLUR_LISTS)


def detect_layout(root: Path) -> str:
    """The paired layout of ``root`` (a key of :data:`LAYOUTS`).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        LayoutError: no layout matches, or more than one does (naming the folder, what matched, what is expected).
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: paired dataset folder not found (dvc pull, or `dvc add` your pairs)")
    found = _matching_layouts(root)
    if len(found) == 1:
        return found[0]
    expected = "; ".join(LAYOUTS.values())
    if not found:
        raise LayoutError(f"{root}: no paired layout recognised; expected one of: {expected}")
    raise LayoutError(
        f"{root}: ambiguous paired layout, it matches {' and '.join(found)}; keep one layout per dataset folder "
        f"({expected})"
    )


def _pair_by_stem(
    blurred_dir: Path, sharp_dir: Path, root: Path, dataset: str, split: str, orphans: dict[str, str]
) -> list[PairedImage]:
    """Pairs of two folders whose files match by relative path without extension; the rest become orphans."""
    sides: list[dict[str, list[Path]]] = []
    for folder in (blurred_dir, sharp_dir):
        by_key: dict[str, list[Path]] = {}
        for path in _images(folder):
            by_key.setdefault(_stem_key(path, folder), []).append(path)
        sides.append(by_key)
    blurred, sharp = sides
    pairs = []
    for key in sorted(blurred.keys() | sharp.keys()):
        mine, theirs = blurred.get(key, []), sharp.get(key, [])
        for paths in (mine, theirs):
            if len(paths) > 1:
                for path in paths:
                    orphans[_rel(path, root)] = f"{len(paths)} files share the name {key!r} (one per name)"
        if len(mine) > 1 or len(theirs) > 1:
            continue
        if mine and not theirs:
            orphans[_rel(mine[0], root)] = f"no sharp partner {key}.* in {_rel(sharp_dir, root)}/"
        elif theirs and not mine:
            orphans[_rel(theirs[0], root)] = f"no blurred partner {key}.* in {_rel(blurred_dir, root)}/"
        else:
            pair_id = _rel(mine[0], root)
            pairs.append(PairedImage(dataset, split, pair_id, mine[0], (theirs[0],)))
    return pairs


def _scan_gopro(root: Path, orphans: dict[str, str], blurred_folder: str) -> list[PairedImage]:
    pairs = []
    for sequence in _gopro_sequences(root):
        blurred_dir = sequence / blurred_folder
        if not blurred_dir.is_dir():
            orphans[_rel(sequence, root)] = f"no {blurred_folder}/ folder beside sharp/"
            continue
        pairs += _pair_by_stem(blurred_dir, sequence / "sharp", root, "gopro", sequence.parent.name, orphans)
    return pairs


def _read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _scan_hide(root: Path, orphans: dict[str, str]) -> list[PairedImage]:
    gt = {p.name: p for p in _images(root / "GT")}
    pairs = []
    for split in ("train", "test"):
        folder = root / split
        listed: set[str] | None = None
        if (root / f"{split}.txt").is_file():
            listed = set(_read_list(root / f"{split}.txt"))
            for entry in sorted(listed):
                if not any((folder / entry).is_file() or p.name == entry for p in _images(folder)):
                    orphans[f"{split}.txt:{entry}"] = f"listed in {split}.txt but not found under {split}/"
        for path in _images(folder):
            rel = _rel(path, root)
            if listed is not None and _rel(path, folder) not in listed and path.name not in listed:
                continue
            if path.name not in gt:
                orphans[rel] = f"no sharp partner GT/{path.name}"
                continue
            pairs.append(PairedImage("hide", split, rel, path, (gt[path.name],)))
    return pairs


def _scan_realblur(root: Path, orphans: dict[str, str]) -> list[PairedImage]:
    pairs = []
    for list_name, (dataset, split) in REALBLUR_LISTS.items():
        if not (root / list_name).is_file():
            continue
        for number, line in enumerate(_read_list(root / list_name), start=1):
            fields = line.split()
            if len(fields) != 2:
                orphans[f"{list_name}:{number}"] = f"expected '<gt path> <blur path>', got {line[:80]!r}"
                continue
            sharp, blurred = root / fields[0], root / fields[1]
            missing = [
                f"{role} {fields[index]}"
                for index, role in ((1, "blurred"), (0, "sharp"))
                if not (root / fields[index]).is_file()
            ]
            if missing:
                orphans[fields[1]] = f"{list_name} line {number}: {' and '.join(missing)} not found"
                continue
            pairs.append(PairedImage(dataset, split, fields[1], blurred, (sharp,)))
    return pairs


def _scan_kohler(root: Path, orphans: dict[str, str]) -> list[PairedImage]:
    blurred: dict[tuple[int, int], Path] = {}
    frames: dict[tuple[int, int], list[tuple[int, Path]]] = {}
    for path in _kohler_files(root):
        if match := KOHLER_BLURRED.match(path.stem):
            blurred[(int(match[1]), int(match[2]))] = path
        elif match := KOHLER_SHARP.match(path.stem):
            frames.setdefault((int(match[1]), int(match[2])), []).append((int(match[3]), path))
    pairs = []
    for key in sorted(blurred.keys() | frames.keys()):
        image, shake = key
        if key not in frames:
            orphans[_rel(blurred[key], root)] = f"no sharp frames GroundTruth{image}_{shake}_<frame>.png"
        elif key not in blurred:
            first = sorted(frames[key])[0][1]
            orphans[_rel(first, root)] = f"no blurred partner Blurry{image}_{shake}.png for {len(frames[key])} frame(s)"
        else:
            sharp = tuple(path for _, path in sorted(frames[key]))
            pairs.append(PairedImage("kohler", "test", _rel(blurred[key], root), blurred[key], sharp))
    return pairs


def _scan_generic(root: Path, orphans: dict[str, str]) -> list[PairedImage]:
    pairs = []
    for base in _generic_bases(root):
        split = "test" if base == root else base.name
        pairs += _pair_by_stem(base / "blur", base / "sharp", root, root.name, split, orphans)
    return pairs


def scan_pairs(root: Path, *, gopro_blurred: str = "blur") -> PairScan:
    """Every pair of the paired folder ``root``, in a stable order, and the files that lack a partner.

    Args:
        root: the dataset folder (``data/raw/<name>``).
        gopro_blurred: for GoPro, ``blur`` (the published tables) or ``blur_gamma``.

    Raises:
        LayoutError: ``root`` is in no paired layout, or in several (:func:`detect_layout`).
    """
    if gopro_blurred not in ("blur", "blur_gamma"):
        raise ValueError(f"scan_pairs: gopro_blurred must be 'blur' or 'blur_gamma', got {gopro_blurred!r}")
    layout = detect_layout(root)
    orphans: dict[str, str] = {}
    if layout == "gopro":
        pairs = _scan_gopro(root, orphans, gopro_blurred)
    elif layout == "hide":
        pairs = _scan_hide(root, orphans)
    elif layout == "realblur":
        pairs = _scan_realblur(root, orphans)
    elif layout == "kohler":
        pairs = _scan_kohler(root, orphans)
    else:
        pairs = _scan_generic(root, orphans)
    return PairScan(root=root, layout=layout, pairs=pairs, orphans=orphans)


# --------------------------------------------------------------------------------------------- ingest
@dataclass
class PairRecord:
    """One validated pair in the paired manifest: files under the ingested folder, their sources and hashes."""

    pair_id: str
    dataset: str
    split: str
    blurred: str
    sharp: list[str]
    source_blurred: str
    source_sharp: list[str]
    width: int
    height: int
    sha256: list[str]
    converted: dict[str, list[str]] = field(default_factory=dict)
    texture: str = ""  # the first sharp image's texture map (bdirnet.texture.encode_tiles): the val crop rule
    scene: str = ""  # frames of one scene go to one split (scene_of)


@dataclass
class PairedIngestReport:
    layout: str
    pairs: list[PairRecord]
    quarantined: dict[str, str]

    def counts(self) -> dict[str, dict[str, int]]:
        """Pairs per dataset and split."""
        counts: dict[str, dict[str, int]] = {}
        for record in self.pairs:
            per_split = counts.setdefault(record.dataset, {})
            per_split[record.split] = per_split.get(record.split, 0) + 1
        return counts


def _decode_pair(pair: PairedImage, root: Path, rules: IngestConfig) -> tuple[list[np.ndarray], list[list[str]]]:
    """Every file of ``pair`` decoded, or :class:`BadImage` naming the file at fault and what is wrong."""
    arrays, notes = [], []
    for role, path in (("blurred", pair.blurred), *(("sharp", p) for p in pair.sharp)):
        try:
            array, note = load_rgb8(path, rules)
        except BadImage as error:
            raise BadImage(f"{role} {_rel(path, root)}: {error}") from None
        except OSError as error:
            raise BadImage(f"{role} {_rel(path, root)}: cannot read the file ({error.strerror or error})") from None
        arrays.append(array)
        notes.append(note)
    height, width = arrays[0].shape[:2]
    for path, array in zip(pair.sharp, arrays[1:], strict=True):
        if array.shape[:2] != (height, width):
            raise BadImage(
                f"sizes differ: blurred {width}×{height}, sharp {_rel(path, root)} {array.shape[1]}×{array.shape[0]}"
            )
    return arrays, notes


def _write_image(source: Path, array: np.ndarray, notes: list[str], target: Path) -> None:
    """The original bytes when they are a PNG that decodes as is (same pixels), else the converted array as PNG."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not notes and source.suffix.lower() == ".png":
        shutil.copyfile(source, target)
    else:
        save_png(array, target)


def _quarantine(files: list[Path], root: Path, quarantine_dir: Path) -> None:
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        if path.is_file():
            shutil.copyfile(path, quarantine_dir / _rel(path, root).replace("/", "__"))


def ingest_pairs(
    raw_dir: Path,
    out_dir: Path,
    rules: IngestConfig,
    *,
    gopro_blurred: str = "blur",
    val_percent: int = 0,
    salt: str = "",
) -> PairedIngestReport:
    """Validate every pair of the paired folder ``raw_dir`` and write the good ones under ``out_dir/images``.

    Each file of a pair goes through :func:`bdirnet.images.decode_image_file` with the ingest rules
    (``min_side_px``, ``max_pixels``); a pair is good when every file decodes and all have the blurred file's size.
    Writes ``out_dir/manifest.json`` (``kind: paired``; every good pair with its dataset, the dataset's own split,
    files, sizes, sha256 of the sources and conversions), ``out_dir/quarantine.txt`` (one line per bad pair or
    partnerless file: ``<blurred path>: <reason>``) and copies of the bad files in ``out_dir/quarantine/``. The
    splits are the dataset's own; with ``val_percent`` > 0, a dataset without a val split of its own gets one carved
    from its train part by scene (:func:`carve_val`, ordered by ``salt``). ``ingest.test_percent`` and the minimum
    split sizes do not apply. Every record keeps the texture map of its sharp image (the val crop rule of the pairs
    stage) and its scene.

    Raises:
        FileNotFoundError: ``raw_dir`` is missing.
        LayoutError: ``raw_dir`` is in no paired layout, or in several.
    """
    scan = scan_pairs(raw_dir, gopro_blurred=gopro_blurred)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    images_dir, quarantine_dir = out_dir / "images", out_dir / "quarantine"
    images_dir.mkdir(parents=True)
    quarantined = dict(scan.orphans)
    if scan.orphans:
        _quarantine([raw_dir / key for key in scan.orphans], raw_dir, quarantine_dir)
    records: list[PairRecord] = []
    for pair in scan.pairs:
        try:
            arrays, notes = _decode_pair(pair, raw_dir, rules)
        except BadImage as error:
            quarantined[pair.pair_id] = str(error)
            _quarantine([pair.blurred, *pair.sharp], raw_dir, quarantine_dir)
            continue
        files = []
        for source, array, note in zip((pair.blurred, *pair.sharp), arrays, notes, strict=True):
            name = _rel(source, raw_dir)
            name = name if not note and name.lower().endswith(".png") else f"{name}.png"
            _write_image(source, array, note, images_dir / name)
            files.append(f"images/{name}")
        sources = [_rel(p, raw_dir) for p in (pair.blurred, *pair.sharp)]
        records.append(
            PairRecord(
                pair_id=pair.pair_id,
                dataset=pair.dataset,
                split=pair.split,
                blurred=files[0],
                sharp=files[1:],
                source_blurred=sources[0],
                source_sharp=sources[1:],
                width=int(arrays[0].shape[1]),
                height=int(arrays[0].shape[0]),
                sha256=[hashlib.sha256(p.read_bytes()).hexdigest() for p in (pair.blurred, *pair.sharp)],
                converted={s: n for s, n in zip(sources, notes, strict=True) if n},
                texture=encode_tiles(texture_tiles(arrays[1])),
                scene=scene_of(scan.layout, pair.pair_id),
            )
        )
    if val_percent:
        records = carve_val(records, val_percent, salt)
    report = PairedIngestReport(layout=scan.layout, pairs=records, quarantined=quarantined)
    recorded = {k: v for k, v in asdict(rules).items() if k in ("dataset", "min_side_px", "max_pixels")}
    manifest = {
        "kind": PAIRED_MANIFEST_KIND,
        "source": str(raw_dir),
        "layout": scan.layout,
        "gopro_blurred": gopro_blurred,
        "rules": recorded,
        "counts": report.counts(),
        "pairs": [asdict(r) for r in records],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    lines = [f"{name}: {reason}" for name, reason in sorted(quarantined.items())]
    (out_dir / "quarantine.txt").write_text("".join(line + "\n" for line in lines))
    return report


HIDE_SOURCE = re.compile(r"from([^./]+)")


def scene_of(layout: str, pair_id: str) -> str:
    """The scene of a pair: its frames are near-duplicates, so a split never cuts one.

    GoPro: ``<split>/<sequence>``; RealBlur: the folder holding ``blur/`` (``.../scene003``); HIDE: the GoPro video a
    frame comes from (``1fromGOPR0950.MP4.png`` -> ``GOPR0950``); Köhler: the image (4 images × 12 shakes); generic:
    the pair itself.
    """
    parts = pair_id.split("/")
    if layout in ("gopro", "realblur") and len(parts) >= 3:
        return "/".join(parts[:-2])
    if layout == "hide" and (match := HIDE_SOURCE.search(parts[-1])):
        return match[1]
    if layout == "kohler" and (match := KOHLER_BLURRED.match(Path(parts[-1]).stem)):
        return f"Blurry{match[1]}"
    return pair_id


def carve_val(records: list[PairRecord], val_percent: int, salt: str) -> list[PairRecord]:
    """Move whole scenes of each dataset's train part to a val split, in a salted ``crc32`` order of the scenes,
    until val holds ``val_percent`` % of that part's pairs (at least one scene; never every scene). A dataset that has
    a val split of its own, or a train part of one scene, keeps its splits."""
    out = list(records)
    for dataset in sorted({r.dataset for r in records}):
        own = [r for r in records if r.dataset == dataset]
        train = [r for r in own if r.split == "train"]
        scenes = sorted({r.scene or r.pair_id for r in train}, key=lambda s: (zlib.crc32(f"{salt}{s}".encode()), s))
        if any(r.split == "val" for r in own) or len(scenes) < 2:
            continue
        want, taken = len(train) * val_percent / 100, 0
        chosen: set[str] = set()
        for scene in scenes[:-1]:
            if chosen and taken >= want:
                break
            chosen.add(scene)
            taken += sum((r.scene or r.pair_id) == scene for r in train)
        moved = {r.pair_id for r in train if (r.scene or r.pair_id) in chosen}
        out = [replace(r, split="val") if r.dataset == dataset and r.pair_id in moved else r for r in out]
    return out


def ingest_paired_root(paired_root: Path, out_root: Path, rules: IngestConfig) -> dict[str, PairedIngestReport]:
    """Ingest every paired dataset folder under ``paired_root`` (``data/raw/paired/<name>/``) into
    ``out_root/<name>/`` (:func:`ingest_pairs`, val carved by ``rules.val_percent``). Folders whose name starts with
    ``.`` or ``_`` are skipped; a missing ``paired_root`` holds no datasets.

    Raises:
        LayoutError: a folder in no paired layout, or in several (naming it).
        ValueError: two folders give the same dataset name (RealBlur's ``realblur_j`` ...).
    """
    reports: dict[str, PairedIngestReport] = {}
    folders = (
        sorted(p for p in paired_root.iterdir() if p.is_dir() and p.name[0] not in "._") if paired_root.is_dir() else []
    )
    seen: dict[str, Path] = {}
    for folder in folders:
        report = ingest_pairs(
            folder, out_root / folder.name, rules, val_percent=rules.val_percent, salt=rules.split_salt
        )
        for dataset in report.counts():
            if dataset in seen:
                raise ValueError(f"{folder}: its pairs are named {dataset!r} like those of {seen[dataset]}; "
                                 "keep one folder per dataset")  # fmt: skip
            seen[dataset] = folder
        reports[folder.name] = report
    return reports


def read_paired_datasets(root: Path) -> dict[str, list[PairRecord]]:
    """Every ingested paired dataset under ``root`` (``data/ingested/paired``): dataset name -> its pairs, with
    files relative to ``root`` (``<folder>/images/...``). A missing ``root`` holds none.

    Raises:
        ValueError: an unreadable manifest (naming the file).
    """
    out: dict[str, list[PairRecord]] = {}
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for record in read_paired_manifest(folder):
            moved = replace(
                record,
                blurred=f"{folder.name}/{record.blurred}",
                sharp=[f"{folder.name}/{file}" for file in record.sharp],
            )
            out.setdefault(record.dataset, []).append(moved)
    return out


def read_paired_manifest(ingested_dir: Path) -> list[PairRecord]:
    """The pairs of an ingested paired dataset.

    Raises:
        ValueError: the manifest is unreadable or not a paired one (naming the file).
    """
    path = ingested_dir / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the ingest manifest ({error})") from None
    if data.get("kind") != PAIRED_MANIFEST_KIND:
        raise ValueError(f"{path}: not a paired dataset's manifest (a photo folder's; read it with read_manifest)")
    try:
        return [PairRecord(**item) for item in data["pairs"]]
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: a pair record does not match the paired manifest's fields ({error})") from None
