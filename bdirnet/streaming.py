"""Training pairs on the fly: Ray Data streams freshly blurred crops of the train photos into Ray Train.

A fixed set of materialised pairs overfits (reports/history.md: 10 epochs over 2,304 fixed pairs made the foils
worse on val). Here every training pair is drawn anew from its row identity ``(train.seed, epoch, index)``: which
train photo, where the ``pairs.patch_px`` crop sits, which family (``none`` with ``degrade.none_share``, else one
of ``degrade.train_families``, weighted by ``degrade.train_family_weights``) and the blur seed. No epoch repeats a
pair, and everything stays reproducible from seeds: :func:`draw_row` rebuilds any pair's recipe without running
the stream.

The stream is one Ray dataset over all remaining epochs (``ray.data.range``), mapped by :class:`TrainPairMaker`
actors that keep the decoded photos and blur whole batches with the zoo on their device. Rows come out as uint8
``(N, 3, P, P)`` arrays (``sharp``, ``blurred``: the same 8-bit quantisation as the materialised val/test pairs,
a quarter of float32's object-store traffic); the worker turns them into floats. Each Ray Train worker takes
``samples_per_epoch / num_workers`` rows per epoch from its split of the stream. A resumed run starts the stream at
its first unfinished epoch, so it sees the pairs it would have seen.

Real pairs (``train.paired_share`` > 0): that share of the rows are ``pairs.patch_px`` patches cut at one place from
both images of a train pair of the paired datasets (:mod:`bdirnet.paired`), family = the dataset's name; their
draw comes last, so a plan without real pairs draws every row as before.

The driver reads the train photos' ingested PNG bytes once and puts them in Ray's object store
(:func:`photo_store`); the actors take them from there, so on a cluster no node but the driver's needs the
ingested folder.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdirnet.config import DegradeConfig
from bdirnet.datasets import ImageRecord
from bdirnet.deadleaves import dead_leaves
from bdirnet.degrade import apply_degradation, sample_params
from bdirnet.images import decode_png, to_tensor, to_uint8
from bdirnet.paired import PairRecord
from bdirnet.pairs import PAIRED_FOLDER
from bdirnet.runtime import pin_torch_threads

# Decoded photos an actor keeps (an LRU would evict at random under uniform sampling; bounded for huge sets).
MAX_CACHED_PHOTOS = 4096
ROWS_PER_BLOCK = 256


@dataclass(frozen=True)
class StreamPlan:
    """Everything that defines the training stream, picklable for the actors."""

    ingested_dir: str
    files: tuple[str, ...]  # train photos (ingested PNGs), sorted by name
    sizes: tuple[tuple[int, int], ...]  # (height, width) of each
    patch_px: int
    seed: int  # train.seed
    samples_per_epoch: int
    train_families: tuple[str, ...]
    none_share: float
    noise_sigma_max: float
    jpeg_quality_min: int
    dead_leaves_share: float = 0.0
    paired_share: float = 0.0
    paired_files: tuple[tuple[str, str], ...] = ()  # (blurred, sharp) of every real train pair, sorted
    paired_sizes: tuple[tuple[int, int], ...] = ()
    paired_families: tuple[str, ...] = ()  # each pair's dataset
    train_family_weights: tuple[float, ...] = ()  # relative draw of each train family; empty: uniform


PAIRED_FIELDS = ("paired_share", "paired_files", "paired_sizes", "paired_families")


@dataclass(frozen=True)
class RowRecipe:
    """One training pair's recipe: photo, crop and degradation draw."""

    epoch: int
    index: int
    file: str
    top: int
    left: int
    family: str
    blur_seed: int
    dead_leaves_seed: int | None = None  # the sharp side is a dead leaves image in the photo crop's colours
    blurred_file: str | None = None  # a real pair: ``file`` is its sharp image, this its blurred one, no synthesis


def make_plan(
    records: list[ImageRecord],
    ingested_dir: Path,
    patch_px: int,
    seed: int,
    samples_per_epoch: int,
    degrade: DegradeConfig,
    dead_leaves_share: float = 0.0,
    paired: Mapping[str, list[PairRecord]] | None = None,
    paired_share: float = 0.0,
    paired_datasets: tuple[str, ...] = (),
) -> StreamPlan:
    """The stream's plan over the train photos that can hold a ``patch_px`` crop; ``dead_leaves_share`` of the
    rows get a procedural dead leaves image (:mod:`bdirnet.deadleaves`) as their sharp side instead, and
    ``paired_share`` of them are patches of real train pairs of ``paired`` (the ingested paired datasets as
    :func:`bdirnet.paired.read_paired_datasets` reads ``<ingested_dir>/paired``), from ``paired_datasets`` (empty:
    all of them).

    Raises:
        ValueError: no usable train photo; a real-pair share without a usable train pair, or naming a dataset that
            was not ingested (each naming the folder and the fix).
    """
    train = sorted((r for r in records if r.split == "train"), key=lambda r: r.name)
    usable = [r for r in train if min(r.height, r.width) >= patch_px]
    if not usable:
        raise ValueError(
            f"{ingested_dir}/manifest.json: no train photo is at least {patch_px} px on its short side "
            f"({len(train)} train photos; lower pairs.patch_px)"
        )
    real: list[tuple[str, PairRecord]] = []
    if paired_share > 0:
        paired = paired or {}
        missing = sorted(set(paired_datasets) - set(paired))
        if missing or not paired:
            raise ValueError(
                f"{ingested_dir}/paired: train.paired_share is {paired_share} but the paired dataset(s) "
                f"{missing or 'to train on'} were not ingested (found {sorted(paired)}); put them under "
                "data/raw/paired/ or set train.paired_share: 0"
            )
        for dataset in sorted(paired_datasets or paired):
            real += [(dataset, r) for r in sorted(paired[dataset], key=lambda r: r.pair_id) if r.split == "train"]
        real = [(d, r) for d, r in real if min(r.height, r.width) >= patch_px]
        if not real:
            raise ValueError(
                f"{ingested_dir}/paired: train.paired_share is {paired_share} but no train pair of "
                f"{sorted(paired_datasets or paired)} is at least {patch_px} px on its short side"
            )
    return StreamPlan(
        ingested_dir=str(ingested_dir.resolve()),
        files=tuple(r.file for r in usable),
        sizes=tuple((r.height, r.width) for r in usable),
        patch_px=patch_px,
        seed=seed,
        samples_per_epoch=samples_per_epoch,
        train_families=tuple(degrade.train_families),
        none_share=degrade.none_share,
        noise_sigma_max=degrade.noise_sigma_max,
        jpeg_quality_min=degrade.jpeg_quality_min,
        dead_leaves_share=dead_leaves_share,
        paired_share=paired_share if real else 0.0,
        paired_files=tuple((f"{PAIRED_FOLDER}/{r.blurred}", f"{PAIRED_FOLDER}/{r.sharp[0]}") for _, r in real),
        paired_sizes=tuple((r.height, r.width) for _, r in real),
        paired_families=tuple(d for d, _ in real),
        train_family_weights=tuple(degrade.train_family_weights),
    )


def plan_identity(plan: StreamPlan) -> dict[str, Any]:
    """What defines the stream's pairs, for the run's data hash: the plan but its folder; a plan without real pairs
    or family weights gives the identity it had before they existed (same run names)."""
    from bdirnet.config import to_dict

    out = {k: v for k, v in to_dict(plan).items() if k != "ingested_dir"}
    if plan.paired_share == 0:
        for key in PAIRED_FIELDS:
            out.pop(key)
    if not plan.train_family_weights:  # uniform, as before the weights existed
        out.pop("train_family_weights")
    return out


def draw_row(plan: StreamPlan, row: int) -> RowRecipe:
    """The recipe of stream row ``row`` (``epoch = row // samples_per_epoch``): a pure function of the plan."""
    epoch, index = divmod(int(row), plan.samples_per_epoch)
    rng = np.random.default_rng([plan.seed, epoch, index, zlib.crc32(b"train-stream")])
    photo = int(rng.integers(len(plan.files)))
    height, width = plan.sizes[photo]
    top = int(rng.integers(0, height - plan.patch_px + 1))
    left = int(rng.integers(0, width - plan.patch_px + 1))
    if rng.random() < plan.none_share:
        family = "none"
    elif plan.train_family_weights:
        cumulative = np.cumsum(plan.train_family_weights)
        pick = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        family = plan.train_families[min(pick, len(plan.train_families) - 1)]
    else:  # uniform: the draw the rows had before the weights existed
        family = plan.train_families[int(rng.integers(len(plan.train_families)))]
    blur_seed = int(rng.integers(2**31 - 1))
    # Drawn last, and only with a share: the rows of a plan without dead leaves stay as they were.
    dead_leaves = plan.dead_leaves_share > 0 and rng.random() < plan.dead_leaves_share
    leaves_seed = int(rng.integers(2**31 - 1)) if dead_leaves else None
    # Then the real pairs, drawn only with a share, for the same reason.
    if plan.paired_share > 0 and rng.random() < plan.paired_share:
        pair = int(rng.integers(len(plan.paired_files)))
        height, width = plan.paired_sizes[pair]
        top = int(rng.integers(0, height - plan.patch_px + 1))
        left = int(rng.integers(0, width - plan.patch_px + 1))
        blurred, sharp = plan.paired_files[pair]
        return RowRecipe(epoch, index, sharp, top, left, plan.paired_families[pair], 0, None, blurred)
    return RowRecipe(epoch, index, plan.files[photo], top, left, family, blur_seed, leaves_seed)


class TrainPairMaker:
    """Ray Data actor: stream rows (``id``) -> uint8 ``sharp`` and ``blurred`` crops, blurred on its device."""

    def __init__(self, plan: StreamPlan, encoded: Mapping[str, bytes] | Any) -> None:
        """``encoded``: the photos' PNG bytes by file (:func:`read_photos`), or the object ref of
        :func:`photo_store`."""
        self.plan = plan
        if not isinstance(encoded, Mapping):  # an object ref: Ray Data passes constructor arguments as they are
            import ray

            encoded = ray.get(encoded)
        self.encoded: Mapping[str, bytes] = encoded
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.photos: dict[str, np.ndarray] = {}
        pin_torch_threads()

    def photo(self, file: str) -> np.ndarray:
        if file not in self.photos:
            if len(self.photos) >= MAX_CACHED_PHOTOS:
                self.photos.pop(next(iter(self.photos)))
            self.photos[file] = decode_png(self.encoded[file])
        return self.photos[file]

    def crop(self, file: str, recipe: RowRecipe) -> np.ndarray:
        size = self.plan.patch_px
        return self.photo(file)[recipe.top : recipe.top + size, recipe.left : recipe.left + size]

    def sharp(self, recipe: RowRecipe) -> np.ndarray:
        """The row's sharp ``(P, P, 3)`` uint8 side: its photo crop, or a dead leaves image in that crop's colours."""
        size = self.plan.patch_px
        crop = self.crop(recipe.file, recipe)
        if recipe.dead_leaves_seed is None:
            return crop
        return dead_leaves(size, recipe.dead_leaves_seed, crop)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        recipes = [draw_row(self.plan, int(row)) for row in batch["id"]]
        real = [i for i, r in enumerate(recipes) if r.blurred_file is not None]
        if real:
            return self.with_real_pairs(recipes, real)
        return self.synthetic(recipes)

    def synthetic(self, recipes: list[RowRecipe]) -> dict[str, np.ndarray]:
        """Rows blurred by the zoo (not through ``__call__``: Ray wraps it and it is not re-entrant)."""
        crops = np.stack([self.sharp(r) for r in recipes])
        params = [
            sample_params(
                r.family,
                1,
                r.blur_seed,
                noise_sigma_max=self.plan.noise_sigma_max,
                jpeg_quality_min=self.plan.jpeg_quality_min,
            )[0]
            for r in recipes
        ]
        with torch.no_grad():
            blurred = to_uint8(apply_degradation(to_tensor(crops).to(self.device), params))
        return {
            "sharp": np.ascontiguousarray(crops.transpose(0, 3, 1, 2)),
            "blurred": np.ascontiguousarray(blurred.transpose(0, 3, 1, 2)),
        }

    def with_real_pairs(self, recipes: list[RowRecipe], real: list[int]) -> dict[str, np.ndarray]:
        """A batch with real pairs: those cut from both images, the synthetic rows made as a batch of their own."""
        sharp = np.empty((len(recipes), 3, self.plan.patch_px, self.plan.patch_px), np.uint8)
        blurred = np.empty_like(sharp)
        for i in real:
            sharp[i] = self.crop(recipes[i].file, recipes[i]).transpose(2, 0, 1)
            blurred[i] = self.crop(str(recipes[i].blurred_file), recipes[i]).transpose(2, 0, 1)
        synthetic = [i for i in range(len(recipes)) if i not in set(real)]
        if synthetic:
            made = self.synthetic([recipes[i] for i in synthetic])
            sharp[synthetic], blurred[synthetic] = made["sharp"], made["blurred"]
        return {"sharp": sharp, "blurred": blurred}


def read_photos(plan: StreamPlan) -> dict[str, bytes]:
    """The train photos' (and real train pairs') ingested PNG bytes by file (the one place they are read from disk)."""
    encoded = {}
    for file in (*plan.files, *(f for pair in plan.paired_files for f in pair)):
        path = Path(plan.ingested_dir) / file
        try:
            encoded[file] = path.read_bytes()
        except OSError as error:
            raise FileNotFoundError(f"{path}: cannot read an ingested train photo ({error})") from None
    return encoded


def photo_store(plan: StreamPlan) -> Any:
    """The train photos' PNG bytes in Ray's object store (one ``ray.put`` by the driver), for the actors."""
    import ray

    return ray.put(read_photos(plan))


def training_stream(plan: StreamPlan, first_epoch: int, last_epoch: int, actors: int, use_gpu: bool) -> Any:
    """The Ray dataset of the rows of epochs ``first_epoch .. last_epoch - 1`` (Ray must be initialised)."""
    import pyarrow as pa
    import ray

    start, stop = first_epoch * plan.samples_per_epoch, last_epoch * plan.samples_per_epoch
    if stop <= start:
        raise ValueError(f"training stream: no epochs left ({first_epoch}..{last_epoch})")
    # Row ids as in-memory blocks of 256: no read tasks that would wait for a CPU the actors and workers hold.
    ids = np.arange(start, stop, dtype=np.int64)
    per_block = max(1, min(ROWS_PER_BLOCK, -(-len(ids) // (2 * actors))))  # every actor gets blocks
    dataset = ray.data.from_arrow([pa.table({"id": ids[i : i + per_block]}) for i in range(0, len(ids), per_block)])
    return dataset.map_batches(
        TrainPairMaker,
        fn_constructor_kwargs={"plan": plan, "encoded": photo_store(plan)},
        batch_size=64,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if use_gpu else 0,
        num_cpus=0 if use_gpu else 1,
    )


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` from the stream -> float32 in [0, 1] on the same device."""
    return batch.float().div_(255.0)
