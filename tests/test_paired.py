"""Paired datasets: every layout recognised by its structure, pairs found, bad pairs quarantined with one line.

The fixture folders are written in each dataset's exact layout (folder names, file names, list files), with real
photos from scikit-image blurred by our zoo (:func:`bdirnet.degrade.degrade`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data

from bdirnet.config import IngestConfig
from bdirnet.datasets import read_manifest
from bdirnet.degrade import degrade
from bdirnet.images import decode_image_file, to_tensor, to_uint8
from bdirnet.paired import (
    LayoutError,
    detect_layout,
    ingest_pairs,
    looks_paired,
    read_paired_manifest,
    scan_pairs,
)

RULES = IngestConfig(dataset="pairs", min_side_px=32, min_test_photos=0, min_val_photos=0)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "camera")
SIZE = (48, 64)  # height, width: small, above RULES.min_side_px
REPO = Path(__file__).resolve().parents[1]


def sharp_photo(index: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A real photo's centre crop of SIZE (shifted by ``offset``), uint8 RGB."""
    image = getattr(data, PHOTOS[index % len(PHOTOS)])()
    image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
    top = image.shape[0] // 2 - SIZE[0] // 2 + offset[0]
    left = image.shape[1] // 2 - SIZE[1] // 2 + offset[1]
    return np.ascontiguousarray(image[top : top + SIZE[0], left : left + SIZE[1]])


def blurred_of(sharp: np.ndarray, family: str = "motion", seed: int = 0) -> np.ndarray:
    blurred, _ = degrade(to_tensor(sharp), family, seed=seed)
    return to_uint8(blurred)[0]


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_pair(blurred: Path, sharp: Path, index: int, family: str = "motion") -> None:
    photo = sharp_photo(index)
    write(sharp, photo)
    write(blurred, blurred_of(photo, family, seed=index))


def make_gopro(root: Path) -> Path:
    """GOPRO_Large: train|test/<sequence>/blur|blur_gamma|sharp/<6-digit frame>.png."""
    for index, (split, sequence, frame) in enumerate(
        [
            ("train", "GOPR0372_07_00", "000047"),
            ("train", "GOPR0372_07_00", "000048"),
            ("train", "GOPR0374_11_01", "000001"),
            ("test", "GOPR0384_11_00", "000001"),
        ]
    ):
        folder = root / split / sequence
        write_pair(folder / "blur" / f"{frame}.png", folder / "sharp" / f"{frame}.png", index)
        write(folder / "blur_gamma" / f"{frame}.png", blurred_of(sharp_photo(index), "gaussian", seed=index))
    return root


def make_hide(root: Path) -> Path:
    """HIDE_dataset: train/*.png, test/test-close-ups|test-long-shot/*.png, GT/<same name>, train.txt/test.txt."""
    names = {"train": ["6fromGOPR0950.png", "7fromGOPR0950.png"],
             "test/test-close-ups": ["1fromGOPR1096.png"], "test/test-long-shot": ["32fromGOPR1104.png"]}  # fmt: skip
    index = 0
    for folder, files in names.items():
        for name in files:
            write_pair(root / folder / name, root / "GT" / name, index)
            index += 1
    (root / "train.txt").write_text("6fromGOPR0950.png\n7fromGOPR0950.png\n")
    (root / "test.txt").write_text("test-close-ups/1fromGOPR1096.png\ntest-long-shot/32fromGOPR1104.png\n")
    return root


REALBLUR_J = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
REALBLUR_R = "RealBlur-R_BM3D_ECC_IMCORR_centroid_itensity_ref"


def make_realblur(root: Path) -> Path:
    """RealBlur: <variant folder>/sceneNNN/blur/blur_M.png + gt/gt_M.png, lists of '<gt path> <blur path>'."""
    lists: dict[str, list[str]] = {}
    for index, (list_name, folder, scene, number) in enumerate(
        [
            ("RealBlur_J_train_list.txt", REALBLUR_J, "scene003", 1),
            ("RealBlur_J_test_list.txt", REALBLUR_J, "scene001", 1),
            ("RealBlur_J_test_list.txt", REALBLUR_J, "scene244_reflect", 7),
            ("RealBlur_R_test_list.txt", REALBLUR_R, "scene001", 1),
        ]
    ):
        gt, blur = f"{folder}/{scene}/gt/gt_{number}.png", f"{folder}/{scene}/blur/blur_{number}.png"
        write_pair(root / blur, root / gt, index, "shake")
        lists.setdefault(list_name, []).append(f"{gt} {blur}")
    for list_name, lines in lists.items():
        (root / list_name).write_text("\n".join(lines) + "\n")
    return root


def make_kohler(root: Path, frames: int = 3) -> Path:
    """Köhler: Blurry<i>_<k>.png and the sharp frames along the shake, GroundTruth<i>_<k>_<frame>.png."""
    for image in (1, 2):
        for shake in (1, 2):
            offsets = [(f, (f * shake) % 3) for f in range(frames)]  # the photo seen along a small shake
            for number, offset in enumerate(offsets, start=1):
                write(root / f"GroundTruth{image}_{shake}_{number}.png", sharp_photo(image, offset))
            write(root / f"Blurry{image}_{shake}.png", blurred_of(sharp_photo(image, offsets[1]), "shake", shake))
    return root


def make_generic(root: Path) -> Path:
    """blur/ + sharp/ with matching names (sub-folders too; extensions may differ)."""
    write_pair(root / "blur" / "a.png", root / "sharp" / "a.png", 0)
    write_pair(root / "blur" / "street" / "b.png", root / "sharp" / "street" / "b.png", 1, "defocus")
    write(root / "blur" / "c.jpg", blurred_of(sharp_photo(2)))
    write(root / "sharp" / "c.png", sharp_photo(2))
    return root


MAKERS = {"gopro": make_gopro, "hide": make_hide, "realblur": make_realblur, "kohler": make_kohler,
          "generic": make_generic}  # fmt: skip


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every layout written once for the module (read-only for the tests)."""
    base = tmp_path_factory.mktemp("layouts")
    return {name: make(base / name) for name, make in MAKERS.items()}


def pairs_of(root: Path) -> list[tuple[str, str, str, list[str]]]:
    scan = scan_pairs(root)
    assert scan.orphans == {}
    return [(p.dataset, p.split, p.pair_id, [s.relative_to(root).as_posix() for s in p.sharp]) for p in scan.pairs]


class TestLayouts:
    def test_every_layout_recognised(self, layouts: dict[str, Path]) -> None:
        assert {name: detect_layout(root) for name, root in layouts.items()} == {name: name for name in MAKERS}
        assert all(looks_paired(root) for root in layouts.values())

    def test_gopro_pairs(self, layouts: dict[str, Path]) -> None:
        assert pairs_of(layouts["gopro"]) == [
            ("gopro", "train", "train/GOPR0372_07_00/blur/000047.png", ["train/GOPR0372_07_00/sharp/000047.png"]),
            ("gopro", "train", "train/GOPR0372_07_00/blur/000048.png", ["train/GOPR0372_07_00/sharp/000048.png"]),
            ("gopro", "train", "train/GOPR0374_11_01/blur/000001.png", ["train/GOPR0374_11_01/sharp/000001.png"]),
            ("gopro", "test", "test/GOPR0384_11_00/blur/000001.png", ["test/GOPR0384_11_00/sharp/000001.png"]),
        ]
        gamma = scan_pairs(layouts["gopro"], gopro_blurred="blur_gamma").pairs
        assert gamma[-1].pair_id == "test/GOPR0384_11_00/blur_gamma/000001.png"

    def test_hide_pairs(self, layouts: dict[str, Path]) -> None:
        assert pairs_of(layouts["hide"]) == [
            ("hide", "train", "train/6fromGOPR0950.png", ["GT/6fromGOPR0950.png"]),
            ("hide", "train", "train/7fromGOPR0950.png", ["GT/7fromGOPR0950.png"]),
            ("hide", "test", "test/test-close-ups/1fromGOPR1096.png", ["GT/1fromGOPR1096.png"]),
            ("hide", "test", "test/test-long-shot/32fromGOPR1104.png", ["GT/32fromGOPR1104.png"]),
        ]

    def test_realblur_pairs_follow_the_lists(self, layouts: dict[str, Path]) -> None:
        j, r = REALBLUR_J, REALBLUR_R
        assert pairs_of(layouts["realblur"]) == [
            ("realblur_j", "train", f"{j}/scene003/blur/blur_1.png", [f"{j}/scene003/gt/gt_1.png"]),
            ("realblur_j", "test", f"{j}/scene001/blur/blur_1.png", [f"{j}/scene001/gt/gt_1.png"]),
            ("realblur_j", "test", f"{j}/scene244_reflect/blur/blur_7.png", [f"{j}/scene244_reflect/gt/gt_7.png"]),
            ("realblur_r", "test", f"{r}/scene001/blur/blur_1.png", [f"{r}/scene001/gt/gt_1.png"]),
        ]

    def test_kohler_pairs_hold_every_frame_in_order(self, layouts: dict[str, Path]) -> None:
        pairs = pairs_of(layouts["kohler"])
        assert [p[2] for p in pairs] == ["Blurry1_1.png", "Blurry1_2.png", "Blurry2_1.png", "Blurry2_2.png"]
        assert pairs[1] == ("kohler", "test", "Blurry1_2.png", [f"GroundTruth1_2_{f}.png" for f in (1, 2, 3)])

    def test_generic_pairs_by_name_without_extension(self, layouts: dict[str, Path]) -> None:
        assert pairs_of(layouts["generic"]) == [
            ("generic", "test", "blur/a.png", ["sharp/a.png"]),
            ("generic", "test", "blur/c.jpg", ["sharp/c.png"]),
            ("generic", "test", "blur/street/b.png", ["sharp/street/b.png"]),
        ]

    def test_generic_splits(self, tmp_path: Path) -> None:
        write_pair(tmp_path / "mine" / "train" / "blur" / "x.png", tmp_path / "mine" / "train" / "sharp" / "x.png", 0)
        write_pair(tmp_path / "mine" / "val" / "blur" / "y.png", tmp_path / "mine" / "val" / "sharp" / "y.png", 1)
        assert [(p[0], p[1]) for p in pairs_of(tmp_path / "mine")] == [("mine", "train"), ("mine", "val")]

    def test_two_files_one_name_are_both_left_out(self, tmp_path: Path) -> None:
        root = make_generic(tmp_path / "mine")
        write(root / "blur" / "a.jpg", blurred_of(sharp_photo(0)))
        scan = scan_pairs(root)
        assert [p.pair_id for p in scan.pairs] == ["blur/c.jpg", "blur/street/b.png"]
        assert scan.orphans == dict.fromkeys(["blur/a.jpg", "blur/a.png"], "2 files share the name 'a' (one per name)")

    def test_no_layout_named(self, tmp_path: Path) -> None:
        write(tmp_path / "photos" / "a.png", sharp_photo(0))
        (tmp_path / "photos" / "sharp").mkdir()
        assert looks_paired(tmp_path / "photos") and not looks_paired(tmp_path / "photos" / "sharp")
        with pytest.raises(LayoutError) as error:
            detect_layout(tmp_path / "photos")
        message = str(error.value)
        assert message.startswith(f"{tmp_path / 'photos'}: no paired layout recognised; expected one of: GoPro")
        assert all(name in message for name in ("HIDE", "RealBlur_J_train_list.txt", "Köhler", "blur/ and sharp/"))
        assert "\n" not in message

    def test_ambiguous_layout_named(self, tmp_path: Path) -> None:
        root = make_gopro(tmp_path / "both")
        write_pair(root / "blur" / "a.png", root / "sharp" / "a.png", 0)
        with pytest.raises(LayoutError, match=r"both: ambiguous paired layout, it matches gopro and generic"):
            scan_pairs(root)

    def test_photo_folder_is_not_paired(self, tmp_path: Path) -> None:
        write(tmp_path / "photos" / "nested" / "a.png", sharp_photo(0))
        write(tmp_path / "photos" / "train" / "b.png", sharp_photo(1))  # a photo folder may have split folders
        assert not looks_paired(tmp_path / "photos")
        write(tmp_path / "photos" / "Blurry1_1.png", blurred_of(sharp_photo(1)))  # a Köhler file without frames
        assert looks_paired(tmp_path / "photos")
        scan = scan_pairs(tmp_path / "photos")
        assert (scan.layout, scan.pairs) == ("kohler", [])
        assert scan.orphans == {"Blurry1_1.png": "no sharp frames GroundTruth1_1_<frame>.png"}


def truncated_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


class TestPairedIngest:
    def test_bad_pairs_quarantined_one_line_each(self, tmp_path: Path) -> None:
        root = make_gopro(tmp_path / "gopro")
        sequence = root / "train" / "GOPR0372_07_00"
        write(sequence / "sharp" / "000047.png", sharp_photo(0)[:40])  # sizes differ
        (sequence / "blur" / "000048.png").write_bytes(truncated_png(blurred_of(sharp_photo(1))))  # undecodable
        write(sequence / "blur" / "000049.png", blurred_of(sharp_photo(2)))  # no sharp partner
        write(sequence / "sharp" / "000050.png", sharp_photo(3))  # no blurred partner
        report = ingest_pairs(root, tmp_path / "out", RULES)
        seq = "train/GOPR0372_07_00"
        assert report.quarantined == {
            f"{seq}/blur/000047.png": f"sizes differ: blurred 64×48, sharp {seq}/sharp/000047.png 64×40",
            f"{seq}/blur/000048.png": report.quarantined[f"{seq}/blur/000048.png"],
            f"{seq}/blur/000049.png": f"no sharp partner 000049.* in {seq}/sharp/",
            f"{seq}/sharp/000050.png": f"no blurred partner 000050.* in {seq}/blur/",
        }
        assert report.quarantined[f"{seq}/blur/000048.png"].startswith(f"blurred {seq}/blur/000048.png: cannot decode")
        lines = (tmp_path / "out" / "quarantine.txt").read_text().splitlines()
        assert len(lines) == 4 and all(": " in line for line in lines)
        assert {p.name for p in (tmp_path / "out" / "quarantine").iterdir()} == {
            f"train__GOPR0372_07_00__{side}__{frame}.png"
            for side, frame in [
                ("blur", "000047"),
                ("sharp", "000047"),
                ("blur", "000048"),
                ("sharp", "000048"),
                ("blur", "000049"),
                ("sharp", "000050"),
            ]
        }
        assert [(r.split, r.pair_id) for r in report.pairs] == [
            ("train", "train/GOPR0374_11_01/blur/000001.png"),
            ("test", "test/GOPR0384_11_00/blur/000001.png"),
        ]
        assert report.counts() == {"gopro": {"train": 1, "test": 1}}

    def test_manifest_holds_the_good_pairs_pixel_exact(self, layouts: dict[str, Path], tmp_path: Path) -> None:
        root = layouts["generic"]
        report = ingest_pairs(root, tmp_path / "out", RULES)
        assert report.quarantined == {} and (tmp_path / "out" / "quarantine.txt").read_text() == ""
        records = read_paired_manifest(tmp_path / "out")
        assert [(r.pair_id, r.blurred, r.sharp) for r in records] == [
            ("blur/a.png", "images/blur/a.png", ["images/sharp/a.png"]),
            ("blur/c.jpg", "images/blur/c.jpg.png", ["images/sharp/c.png"]),
            ("blur/street/b.png", "images/blur/street/b.png", ["images/sharp/street/b.png"]),
        ]
        for record in records:
            assert (record.width, record.height) == (SIZE[1], SIZE[0]) and len(record.sha256) == 2
            for source, written in zip([record.source_blurred, *record.source_sharp], [record.blurred, *record.sharp],
                                       strict=True):  # fmt: skip
                expected, _ = decode_image_file(root / source)
                assert np.array_equal(decode_image_file(tmp_path / "out" / written)[0], expected)
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        assert (manifest["kind"], manifest["layout"], manifest["counts"]) == (
            "paired",
            "generic",
            {"generic": {"test": 3}},
        )
        with pytest.raises(ValueError, match=r"manifest.json: a paired dataset's manifest"):
            read_manifest(tmp_path / "out")

    def test_kohler_frame_of_another_size_quarantines_the_pair(self, tmp_path: Path) -> None:
        root = make_kohler(tmp_path / "kohler")
        write(root / "GroundTruth2_1_3.png", sharp_photo(2)[:, :60])
        (root / "GroundTruth1_2_2.png").write_bytes(b"")
        (root / "Blurry2_2.png").unlink()
        report = ingest_pairs(root, tmp_path / "out", RULES)
        assert report.quarantined == {
            "Blurry1_2.png": "sharp GroundTruth1_2_2.png: empty file (0 bytes)",
            "Blurry2_1.png": "sizes differ: blurred 64×48, sharp GroundTruth2_1_3.png 60×48",
            "GroundTruth2_2_1.png": "no blurred partner Blurry2_2.png for 3 frame(s)",
        }
        assert [(r.pair_id, len(r.sharp)) for r in report.pairs] == [("Blurry1_1.png", 3)]

    def test_realblur_listed_file_missing(self, tmp_path: Path) -> None:
        root = make_realblur(tmp_path / "realblur")
        (root / REALBLUR_J / "scene001" / "gt" / "gt_1.png").unlink()
        with (root / "RealBlur_J_test_list.txt").open("a") as out:
            out.write("only-one-field.png\n")
        report = ingest_pairs(root, tmp_path / "out", RULES)
        assert report.quarantined == {
            f"{REALBLUR_J}/scene001/blur/blur_1.png": (
                f"RealBlur_J_test_list.txt line 1: sharp {REALBLUR_J}/scene001/gt/gt_1.png not found"
            ),
            "RealBlur_J_test_list.txt:3": "expected '<gt path> <blur path>', got 'only-one-field.png'",
        }
        assert report.counts() == {"realblur_j": {"train": 1, "test": 1}, "realblur_r": {"test": 1}}

    def test_hide_lists_choose_the_files(self, tmp_path: Path) -> None:
        root = make_hide(tmp_path / "hide")
        write_pair(root / "train" / "99fromGOPR0001.png", root / "GT" / "99fromGOPR0001.png", 5)  # not listed
        (root / "test.txt").write_text("test-close-ups/1fromGOPR1096.png\ntest-long-shot/gone.png\n")
        (root / "GT" / "1fromGOPR1096.png").unlink()
        scan = scan_pairs(root)
        assert [p.pair_id for p in scan.pairs] == ["train/6fromGOPR0950.png", "train/7fromGOPR0950.png"]
        assert scan.orphans == {
            "test.txt:test-long-shot/gone.png": "listed in test.txt but not found under test/",
            "test/test-close-ups/1fromGOPR1096.png": "no sharp partner GT/1fromGOPR1096.png",
        }


def test_ingest_stage_takes_a_paired_folder(layouts: dict[str, Path], tmp_path: Path) -> None:
    """The ingest stage script, on ``ingest.dataset`` naming a paired folder, writes the paired manifest."""
    raw_root = layouts["realblur"].parent
    params = tmp_path / "params.yaml"
    keys = {**dataclasses.asdict(RULES), "dataset": "realblur"}
    params.write_text(yaml.safe_dump({"ingest": keys}))
    result = subprocess.run(
        [
            sys.executable,
            "pipelines/ingest.py",
            "--params",
            str(params),
            "--raw-root",
            str(raw_root),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ingest: realblur layout, 4 pairs {'realblur_j': {'train': 1, 'test': 2}" in result.stdout
    assert [r.dataset for r in read_paired_manifest(tmp_path / "out")].count("realblur_r") == 1
