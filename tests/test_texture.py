"""The image-only rules: perceptual hash + near-duplicate groups, texture map + evaluation crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bdirnet.datasets import BUNDLED_PHOTOS, skimage_data_dir
from bdirnet.images import decode_image_file
from bdirnet.texture import (
    NEAR_DUPLICATE_BITS,
    decode_tiles,
    encode_tiles,
    group_near_duplicates,
    hash_distance,
    perceptual_hash,
    perceptual_hashes,
    texture_tiles,
    textured_boxes,
)


def bundled(name: str) -> np.ndarray:
    pixels, _ = decode_image_file(skimage_data_dir() / name, max_pixels=40_000_000, min_side_px=16)
    return pixels


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def resized(image: np.ndarray, factor: float) -> np.ndarray:
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def near_duplicates(image: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of a photo that are the same scene: what a package shipping variants of a photo would hold."""
    h, w = image.shape[:2]
    return {
        "resized": resized(image, 0.5),
        "cropped": image[h // 20 : h - h // 20, w // 20 : w - w // 20],
        "jpeg": jpeg(image, 40),
        "stereo": image[:, w // 25 :],  # the scene seen from 4 % further right
        "all_three": jpeg(resized(image[h // 20 :, : w * 95 // 100], 0.6), 50),
    }


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: bundled(name) for name in BUNDLED_PHOTOS}


class TestNearDuplicates:
    def test_copies_of_a_photo_are_within_the_threshold(self, photos: dict[str, np.ndarray]) -> None:
        for name in ("astronaut.png", "coffee.png", "rocket.jpg"):
            original = perceptual_hashes(photos[name])
            for kind, copy in near_duplicates(photos[name]).items():
                assert hash_distance(original, perceptual_hashes(copy)) <= NEAR_DUPLICATE_BITS, (name, kind)

    def test_bundled_photos_group_only_the_stereo_pair(self, photos: dict[str, np.ndarray]) -> None:
        groups = group_near_duplicates({name: perceptual_hashes(image) for name, image in photos.items()})
        joined = {name: group for name, group in groups.items() if group != name}
        assert joined == {"motorcycle_right.png": "motorcycle_left.png"}

    def test_groups_are_transitive_and_named_by_their_smallest_member(self) -> None:
        # a~b and b~c, a and c far apart: one group, named "a" whatever the order of the mapping.
        a, b, c, d = 0, (1 << 8) - 1, (1 << 16) - 1, (1 << 64) - 1
        hashes = {"c": [c], "d": [d], "b": [b], "a": [a]}
        assert group_near_duplicates(hashes, max_bits=8) == {"a": "a", "b": "a", "c": "a", "d": "d"}
        assert group_near_duplicates(hashes, max_bits=7) == {"a": "a", "b": "b", "c": "c", "d": "d"}

    def test_full_frame_hash_survives_resize_not_another_photo(self, photos: dict[str, np.ndarray]) -> None:
        image = photos["chelsea.png"]
        assert hash_distance([perceptual_hash(resized(image, 0.25))], [perceptual_hash(image)]) <= 2
        assert hash_distance([perceptual_hash(image)], [perceptual_hash(photos["coffee.png"])]) > 16


def flat_box(tiles: np.ndarray, box: tuple[int, int, int], tile_px: int = 32) -> float:
    top, left, size = (v // tile_px for v in box)
    return float(tiles[top : top + size, left : left + size].mean())


def overlap(first: tuple[int, int, int], second: tuple[int, int, int]) -> bool:
    return abs(first[0] - second[0]) < first[2] and abs(first[1] - second[1]) < first[2]


def gradient_std(image: np.ndarray) -> float:
    gray = image.astype(np.float32).mean(axis=2) / 255
    dy, dx = np.gradient(gray)
    return float(np.hypot(dx, dy).std())


class TestTexturedBoxes:
    def test_picks_the_detail_not_the_wall_on_astronaut(self, photos: dict[str, np.ndarray]) -> None:
        image = photos["astronaut.png"]
        tiles = texture_tiles(image)
        wall = (64, 320, 64)  # the plain wall behind the astronaut's shoulder: every 32 px tile is smooth
        assert flat_box(tiles, wall) == 0.0
        boxes = textured_boxes(tiles, box_px=64, count=100, min_score=0.75)
        assert len(boxes) >= 10
        assert not any(overlap(box, wall) for box in boxes)
        top, left, size = wall
        wall_std = gradient_std(image[top : top + size, left : left + size])
        assert all(gradient_std(image[t : t + s, u : u + s]) > 2 * wall_std for t, u, s in boxes)

    def test_boxes_do_not_overlap_and_reach_the_minimum(self, photos: dict[str, np.ndarray]) -> None:
        tiles = texture_tiles(photos["hubble_deep_field.jpg"])
        boxes = textured_boxes(tiles, box_px=128, count=12, min_score=0.6)
        assert 1 <= len(boxes) <= 12
        assert all(flat_box(tiles, box) >= 0.6 for box in boxes)
        assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        assert [flat_box(tiles, box) for box in boxes] == sorted((flat_box(tiles, box) for box in boxes), reverse=True)

    def test_blank_and_near_blank_photos_give_no_box(self, photos: dict[str, np.ndarray]) -> None:
        assert textured_boxes(texture_tiles(np.full((512, 512, 3), 128, np.uint8)), 256, 3, 0.01) == []
        for name in ("moon.png", "retina.jpg"):  # the near-blank bundled photos
            assert textured_boxes(texture_tiles(photos[name]), 256, 3, 0.5) == [], name

    def test_smaller_than_a_box_gives_none(self) -> None:
        noise = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
        assert textured_boxes(texture_tiles(noise), 256, 3, 0.0) == []
        # 6x9 tiles, all textured: ties go to the box nearest the centre, and no second 4x4 box fits beside it.
        assert textured_boxes(texture_tiles(noise), 128, 3, 0.0) == [(32, 64, 128)]

    def test_deterministic_and_survives_the_manifest(self, photos: dict[str, np.ndarray]) -> None:
        tiles = texture_tiles(photos["coffee.png"])
        assert np.array_equal(decode_tiles(encode_tiles(tiles)), tiles)
        assert textured_boxes(tiles, 128, 4, 0.5) == textured_boxes(decode_tiles(encode_tiles(tiles)), 128, 4, 0.5)
        assert np.array_equal(texture_tiles(photos["coffee.png"].copy()), tiles)
        with pytest.raises(ValueError, match="not a texture map"):
            decode_tiles("garbage")

    def test_box_must_be_whole_tiles(self) -> None:
        with pytest.raises(ValueError, match="multiple of the tile side 32"):
            textured_boxes(np.ones((8, 8), bool), 48, 1, 0.5)
