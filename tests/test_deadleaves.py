"""Dead leaves images: the scale-invariant radius law, full coverage in the palette's colours, seeds, and their
place in the training stream (a share of rows, drawn without disturbing the other rows' recipes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import stats

from bdirnet.config import DegradeConfig
from bdirnet.datasets import read_manifest
from bdirnet.deadleaves import dead_leaves, disc_radii
from bdirnet.streaming import TrainPairMaker, draw_row, make_plan, read_photos

PALETTE = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [240, 240, 240]], dtype=np.uint8)


def test_radii_follow_the_scale_invariant_law() -> None:
    """p(r) ∝ r^-3 on [a, b] means (a^-2 - r^-2) / (a^-2 - b^-2) is uniform on [0, 1]."""
    a, b = 2.0, 64.0
    radii = disc_radii(np.random.default_rng(0), 20_000, a, b)
    assert radii.min() >= a and radii.max() <= b
    u = (a**-2 - radii**-2) / (a**-2 - b**-2)
    assert stats.kstest(u, "uniform").pvalue > 0.01
    # and not a uniform law on [a, b], which the same statistic rejects
    uniform = np.random.default_rng(0).uniform(a, b, 20_000)
    assert stats.kstest((a**-2 - uniform**-2) / (a**-2 - b**-2), "uniform").pvalue < 1e-6


def test_the_square_is_covered_in_palette_colours_only() -> None:
    image = dead_leaves(64, seed=3, palette=PALETTE, supersample=1)
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in PALETTE} and len(colours) == len(PALETTE)


def test_discs_of_many_sizes_make_edges_at_every_scale() -> None:
    """Occlusion by discs of every size: the image has both large flat regions and fine detail."""
    image = dead_leaves(128, seed=1, palette=PALETTE).astype(np.float32).mean(axis=2)
    edges = (np.abs(np.diff(image, axis=1)) > 1).mean()
    assert 0.05 < edges < 0.6  # neither flat nor noise
    assert image.std() > 20


def test_the_image_is_a_function_of_its_seed() -> None:
    assert np.array_equal(dead_leaves(48, 7, PALETTE), dead_leaves(48, 7, PALETTE))
    assert not np.array_equal(dead_leaves(48, 7, PALETTE), dead_leaves(48, 8, PALETTE))


def test_a_share_of_stream_rows_are_dead_leaves_and_the_other_draws_stay(skimage_ingested: Path) -> None:
    records = read_manifest(skimage_ingested)
    degrade = DegradeConfig(none_share=0.2)
    photos = make_plan(records, skimage_ingested, 32, seed=3, samples_per_epoch=200, degrade=degrade)
    mixed = dataclasses.replace(photos, dead_leaves_share=0.5)
    rows = [(draw_row(photos, i), draw_row(mixed, i)) for i in range(400)]
    for plain, leaves in rows:
        assert dataclasses.replace(leaves, dead_leaves_seed=None) == plain and plain.dead_leaves_seed is None
    share = np.mean([leaves.dead_leaves_seed is not None for _, leaves in rows])
    assert 0.4 < share < 0.6
    maker = TrainPairMaker(mixed, read_photos(mixed))
    made = maker({"id": np.arange(40)})
    for index in range(40):
        recipe = draw_row(mixed, index)
        crop = maker.photo(recipe.file)[recipe.top : recipe.top + 32, recipe.left : recipe.left + 32]
        sharp = made["sharp"][index].transpose(1, 2, 0)
        if recipe.dead_leaves_seed is None:
            assert np.array_equal(sharp, crop)
        else:
            assert np.array_equal(sharp, dead_leaves(32, recipe.dead_leaves_seed, crop))
