"""The on-the-fly training stream: fresh pairs every epoch, every pair rebuilt from its seeds, and the Ray Data
stream giving exactly the planned rows (real Ray)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from bdirnet.config import DegradeConfig
from bdirnet.datasets import read_manifest
from bdirnet.degrade import apply_degradation, sample_params
from bdirnet.images import decode_png, to_tensor, to_uint8
from bdirnet.streaming import (
    StreamPlan,
    TrainPairMaker,
    draw_row,
    make_plan,
    plan_identity,
    read_photos,
    training_stream,
)

DEGRADE = DegradeConfig(none_share=0.2, noise_sigma_max=0.01)


@pytest.fixture(scope="module")
def ingested(skimage_ingested: Path) -> Path:
    return skimage_ingested


@pytest.fixture(scope="module")
def plan(ingested: Path) -> StreamPlan:
    return make_plan(read_manifest(ingested), ingested, 32, seed=3, samples_per_epoch=40, degrade=DEGRADE)


def test_plan_takes_train_photos_only(ingested: Path, plan: StreamPlan) -> None:
    train = {r.file for r in read_manifest(ingested) if r.split == "train"}
    assert set(plan.files) == train and len(train) >= 3


def test_each_epoch_draws_fresh_pairs_within_the_photo(plan: StreamPlan) -> None:
    epoch0 = [draw_row(plan, i) for i in range(40)]
    epoch1 = [draw_row(plan, 40 + i) for i in range(40)]
    assert {r.epoch for r in epoch0} == {0} and {r.epoch for r in epoch1} == {1}
    recipe = lambda r: (r.file, r.top, r.left, r.family, r.blur_seed)  # noqa: E731
    assert not {recipe(r) for r in epoch0} & {recipe(r) for r in epoch1}, "an epoch repeated a pair"
    assert [draw_row(plan, i) for i in range(40)] == epoch0, "a row's recipe must be a function of its id"
    sizes = dict(zip(plan.files, plan.sizes, strict=True))
    for r in epoch0 + epoch1:
        height, width = sizes[r.file]
        assert 0 <= r.top <= height - 32 and 0 <= r.left <= width - 32


def test_family_mix_follows_the_none_share(plan: StreamPlan) -> None:
    counts = collections.Counter(draw_row(plan, i).family for i in range(4000))
    assert set(counts) == {"none", *DEGRADE.train_families}
    assert abs(counts["none"] / 4000 - DEGRADE.none_share) < 0.03
    no_none = dataclasses.replace(plan, none_share=0.0)
    assert "none" not in {draw_row(no_none, i).family for i in range(500)}


def test_family_weights_set_how_often_each_family_is_drawn(ingested: Path, plan: StreamPlan) -> None:
    weighted = make_plan(
        read_manifest(ingested), ingested, 32, seed=3, samples_per_epoch=40,
        degrade=dataclasses.replace(DEGRADE, train_family_weights=(3.0, 1.0)),
    )  # fmt: skip
    rows = [draw_row(weighted, i) for i in range(8000)]
    blurred = collections.Counter(r.family for r in rows if r.family != "none")
    assert set(blurred) == {"motion", "gaussian"}
    assert abs(blurred["motion"] / blurred.total() - 0.75) < 0.02
    assert abs((blurred.total() / 8000) - (1 - DEGRADE.none_share)) < 0.02, "the none share must not move"
    # Weighted plans are other streams (another run name); a plan without weights keeps its identity and rows.
    assert "train_family_weights" not in plan_identity(plan)
    assert plan_identity(weighted)["train_family_weights"] == [3.0, 1.0]


def test_maker_output_is_rebuilt_from_the_recipe(ingested: Path, plan: StreamPlan) -> None:
    maker = TrainPairMaker(plan, read_photos(plan))
    ids = np.arange(45, 61)
    out = maker({"id": ids})
    assert out["sharp"].shape == out["blurred"].shape == (16, 3, 32, 32) and out["sharp"].dtype == np.uint8
    for k, row in enumerate(ids):
        r = draw_row(plan, int(row))
        photo = decode_png((ingested / r.file).read_bytes())
        crop = photo[r.top : r.top + 32, r.left : r.left + 32]
        assert np.array_equal(out["sharp"][k], crop.transpose(2, 0, 1))
        params = sample_params(r.family, 1, r.blur_seed, noise_sigma_max=0.01, jpeg_quality_min=0)
        rebuilt = to_uint8(apply_degradation(to_tensor(crop), params))[0]
        assert np.array_equal(out["blurred"][k], rebuilt.transpose(2, 0, 1)), f"row {row} ({r.family})"
    blurred = [k for k, row in enumerate(ids) if draw_row(plan, int(row)).family != "none"]
    assert any(not np.array_equal(out["blurred"][k], out["sharp"][k]) for k in blurred)


def test_too_small_photos_are_named(ingested: Path) -> None:
    with pytest.raises(ValueError, match=r"manifest\.json: no train photo is at least 4096 px"):
        make_plan(read_manifest(ingested), ingested, 4096, seed=0, samples_per_epoch=8, degrade=DEGRADE)


def test_ray_stream_yields_exactly_the_planned_rows_of_the_remaining_epochs(
    ray_session: None, plan: StreamPlan
) -> None:
    """Resuming at epoch 1 of 3: the stream holds epochs 1 and 2, each row as the maker makes it alone."""
    stream = training_stream(plan, first_epoch=1, last_epoch=3, actors=2, use_gpu=False)
    digests = collections.Counter()
    for batch in stream.iter_batches(batch_size=None, batch_format="numpy"):
        for sharp, blurred in zip(batch["sharp"], batch["blurred"], strict=True):
            digests[hashlib.sha256(sharp.tobytes() + blurred.tobytes()).hexdigest()] += 1
    maker = TrainPairMaker(plan, read_photos(plan))
    expected = maker({"id": np.arange(40, 120)})
    wanted = collections.Counter(
        hashlib.sha256(s.tobytes() + b.tobytes()).hexdigest()
        for s, b in zip(expected["sharp"], expected["blurred"], strict=True)
    )
    assert digests == wanted
