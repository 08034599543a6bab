"""Blurred pairs with Ray Data: ingested images -> crop plan -> blur zoo in an actor pool -> Parquet shards.

The crop plan is made on the driver (cheap, deterministic); every row carries its own seed, so a pair does
not depend on how Ray batches rows or which actor blurs them. Actors take one GPU each when the cluster has
GPUs, else one CPU. Shards have the columns ``pair_id, split, source, family, params, sharp, blurred,
height, width``: images as lossless 8-bit PNG bytes, ``params`` as the JSON record of the degradation
(:func:`bdirnet.degrade.apply_degradation` rebuilds the blur from it). Same params -> same shards.

Real pairs (:mod:`bdirnet.paired`, ingested under ``<ingested>/paired/``) join the val shards with the same crop rule
(textured ``val_crop_px`` crops of the sharp image, cut at the same place from the blurred one), as rows with
``family`` = the dataset's name and ``params`` = the source pair and crop (:func:`plan_paired_crops`). Their test
pairs are not cut into crops: the evaluate stage scores whole images (:mod:`bdirnet.paired_eval`). Without paired
datasets the plan and the shards are exactly what they were before real pairs existed.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdirnet.config import DegradeConfig, PairsConfig
from bdirnet.datasets import ImageRecord, crop_boxes
from bdirnet.degrade import FAMILIES, apply_degradation, sample_params
from bdirnet.images import decode_png, encode_png, to_float_array, to_tensor, to_uint8
from bdirnet.paired import PairRecord
from bdirnet.runtime import pin_torch_threads
from bdirnet.texture import decode_tiles, textured_boxes

SPLITS = ("val", "test")  # materialised here; train pairs are streamed (bdirnet.streaming)
COLUMNS = ("pair_id", "split", "source", "family", "params", "sharp", "blurred", "height", "width")
PAIRED_FOLDER = "paired"  # the paired datasets' folder under the ingested folder
PAIRED_SLOT = len(FAMILIES)  # ``family_index`` of a real pair (its family is its dataset's name)
VAL_SLOTS = (*FAMILIES, "paired")  # what ``family_index`` counts: the zoo's families, then every real pair


def row_seed(*parts: object) -> int:
    """A 31-bit seed from the identity of a row (stable across runs, machines and batching)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def plan_crops(records: list[ImageRecord], split: str, pairs: PairsConfig) -> list[dict[str, Any]]:
    """Every pair of the val or test split as a row: which image, which crop, which family, which seed.

    Up to ``val_crops_per_image`` / ``test_crops_per_image`` non-overlapping ``val_crop_px`` /
    ``test_crop_px`` crops per image, chosen by the texture rule from the ingest manifest's texture map alone
    (:func:`bdirnet.datasets.crop_boxes`, ``min_texture``), each under every family of the zoo (training and
    held-out), so that checkpoint selection on val sees robustness too. An image without a qualifying crop gives
    no val/test pair (:func:`untextured` lists them).
    """
    if split not in ("val", "test"):
        raise ValueError(f"plan_crops: only val and test pairs are materialised, not {split!r} (bdirnet.streaming)")
    rows: list[dict[str, Any]] = []
    for record in sorted((r for r in records if r.split == split), key=lambda r: r.name):
        # (name, seed key, box, family): the name identifies the pair within its image; the seed key, with the
        # family, seeds its blur.
        boxes = crop_boxes(record, *_crop_rule(split, pairs))
        # Keyed by box and family *name*: adding a family to the zoo leaves every existing pair as it was.
        combos = [(f"{b:03d}/{family}", f"{b:03d}", box, family) for b, box in enumerate(boxes) for family in FAMILIES]
        for key, seed_key, (top, left, crop), family in combos:
            rows.append(
                {
                    "pair_id": f"{split}/{record.name}/{key}",
                    "split": split,
                    "source": record.name,
                    "file": record.file,
                    "top": top,
                    "left": left,
                    "size": crop,
                    "family": family,
                    "seed": row_seed(pairs.seed, split, record.name, seed_key, family),
                }
            )
    return rows


def _crop_rule(split: str, pairs: PairsConfig) -> tuple[int, int, float]:
    """``(crop_px, crops_per_image, min_texture)`` of the val or test split."""
    if split == "val":
        return pairs.val_crop_px, pairs.val_crops_per_image, pairs.min_texture
    return pairs.test_crop_px, pairs.test_crops_per_image, pairs.min_texture


def untextured(records: list[ImageRecord], split: str, pairs: PairsConfig) -> list[str]:
    """The images of a val/test split that give no crop under the texture rule (too smooth, or too small)."""
    rule = _crop_rule(split, pairs)
    return sorted(r.name for r in records if r.split == split and not crop_boxes(r, *rule))


def check_paired_names(datasets: list[str], where: str) -> None:
    """A paired dataset's name is its pairs' family: it must not be a blur family of the zoo (or ``none``)."""
    clash = sorted(set(datasets) & {*FAMILIES, "none"})
    if clash:
        raise ValueError(f"{where}: paired dataset(s) {clash} are named like blur families of the zoo; rename the "
                         "folder under data/raw/paired/")  # fmt: skip


def plan_paired_crops(paired: dict[str, list[PairRecord]], pairs: PairsConfig) -> list[dict[str, Any]]:
    """The val rows of real pairs: per val pair (datasets and pairs sorted), up to ``val_crops_per_image`` textured
    ``val_crop_px`` crops chosen from its sharp image's texture map by the rule of :func:`plan_crops`, cut at the same
    place from the blurred image. Files are relative to the ingested folder (``paired/<folder>/images/...``)."""
    check_paired_names(sorted(paired), "pairs")
    rows: list[dict[str, Any]] = []
    for dataset in sorted(paired):
        for record in sorted((r for r in paired[dataset] if r.split == "val"), key=lambda r: r.pair_id):
            if not record.texture:
                raise ValueError(f"{dataset}/{record.pair_id}: the paired manifest has no texture map (re-run ingest)")
            boxes = textured_boxes(decode_tiles(record.texture), pairs.val_crop_px, pairs.val_crops_per_image,
                                   pairs.min_texture)  # fmt: skip
            for b, (top, left, crop) in enumerate(boxes):
                source = {"dataset": dataset, "pair": record.pair_id, "blurred": record.source_blurred,
                          "sharp": record.source_sharp[0], "top": top, "left": left, "size": crop}  # fmt: skip
                rows.append(
                    {
                        "pair_id": f"val/{dataset}/{record.pair_id}/{b:03d}",
                        "split": "val",
                        "source": f"{dataset}/{record.pair_id}",
                        "file": f"{PAIRED_FOLDER}/{record.sharp[0]}",
                        "blurred_file": f"{PAIRED_FOLDER}/{record.blurred}",
                        "pair_params": json.dumps(source, sort_keys=True),
                        "top": top,
                        "left": left,
                        "size": crop,
                        "family": dataset,
                        "seed": 0,
                    }
                )
    return rows


class BlurPairs:
    """Ray Data actor: crops rows of the plan from the ingested images and blurs them on its device."""

    def __init__(self, ingested_dir: str, noise_sigma_max: float, jpeg_quality_min: int) -> None:
        self.ingested_dir = Path(ingested_dir)
        self.noise_sigma_max = noise_sigma_max
        self.jpeg_quality_min = jpeg_quality_min
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.images: dict[str, np.ndarray] = {}
        pin_torch_threads()

    def image(self, file: str) -> np.ndarray:
        if file not in self.images:
            self.images[file] = decode_png((self.ingested_dir / file).read_bytes())
        return self.images[file]

    def crop(self, file: str, top: int, left: int, size: int) -> np.ndarray:
        return self.image(file)[int(top) : int(top) + int(size), int(left) : int(left) + int(size)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if "blurred_file" in batch and any(str(f) for f in batch["blurred_file"]):
            return self.with_real_pairs(batch)
        return self.synthetic(batch)

    def synthetic(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Rows of the plan blurred by the zoo (not through ``__call__``: Ray wraps it and it is not re-entrant)."""
        crops = []
        for file, top, left, size in zip(batch["file"], batch["top"], batch["left"], batch["size"], strict=True):
            crops.append(self.crop(str(file), top, left, size))
        sizes = {c.shape for c in crops}
        params = [
            sample_params(
                str(family),
                1,
                int(seed),
                noise_sigma_max=self.noise_sigma_max,
                jpeg_quality_min=self.jpeg_quality_min,
            )[0]
            for family, seed in zip(batch["family"], batch["seed"], strict=True)
        ]
        sharp_u8 = np.stack(crops) if len(sizes) == 1 else None
        blurred_png: list[bytes] = []
        if sharp_u8 is not None:
            sharp = to_tensor(sharp_u8).to(self.device)
            blurred_u8 = to_uint8(apply_degradation(sharp, params))
            blurred_png = [encode_png(b) for b in blurred_u8]
        else:  # mixed crop sizes in one batch: blur one by one
            for crop, record in zip(crops, params, strict=True):
                sharp = to_tensor(crop).to(self.device)
                blurred_png.append(encode_png(to_uint8(apply_degradation(sharp, [record]))[0]))
        sharp_png = [encode_png(c) for c in crops]
        return {
            "pair_id": batch["pair_id"],
            "split": batch["split"],
            "source": batch["source"],
            "family": batch["family"],
            "params": np.array([json.dumps(p, sort_keys=True) for p in params], dtype=object),
            "sharp": np.array(sharp_png, dtype=object),
            "blurred": np.array(blurred_png, dtype=object),
            "height": np.array([c.shape[0] for c in crops], dtype=np.int32),
            "width": np.array([c.shape[1] for c in crops], dtype=np.int32),
        }

    def with_real_pairs(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """A batch holding rows of real pairs (``blurred_file`` set): those are cropped from both files, the others
        go through :meth:`synthetic` one by one."""
        rows = [{key: batch[key][i] for key in batch} for i in range(len(batch["pair_id"]))]
        out: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for row in rows:
            if str(row["blurred_file"]):
                sharp = self.crop(str(row["file"]), row["top"], row["left"], row["size"])
                blurred = self.crop(str(row["blurred_file"]), row["top"], row["left"], row["size"])
                result = {key: row[key] for key in ("pair_id", "split", "source", "family")}
                result |= {
                    "params": str(row["pair_params"]),
                    "sharp": encode_png(sharp),
                    "blurred": encode_png(blurred),
                }
                result |= {"height": sharp.shape[0], "width": sharp.shape[1]}
            else:
                single = self.synthetic(
                    {key: np.array([row[key]], dtype=batch[key].dtype) for key in batch if key != "blurred_file"}
                )
                result = {name: single[name][0] for name in COLUMNS}
            for name in COLUMNS:
                out[name].append(result[name])
        return {
            **{name: np.array(out[name], dtype=object) for name in COLUMNS if name not in ("height", "width")},
            "height": np.array(out["height"], dtype=np.int32),
            "width": np.array(out["width"], dtype=np.int32),
        }


def write_pairs(
    records: list[ImageRecord],
    ingested_dir: Path,
    out_root: str,
    pairs: PairsConfig,
    degrade: DegradeConfig,
    paired: dict[str, list[PairRecord]] | None = None,
) -> dict[str, int]:
    """Run the Ray Data pipeline for the val and test splits and write ``<out_root>/<split>/*.parquet``.

    ``paired``: the ingested paired datasets (:func:`bdirnet.paired.read_paired_datasets` of
    ``<ingested_dir>/paired``), whose val pairs join the val shards (:func:`plan_paired_crops`). Training pairs are
    not materialised: :mod:`bdirnet.streaming` makes fresh ones every epoch. Returns the number of pairs per split.
    Ray must be initialised (:func:`bdirnet.runtime.init_ray`).

    Both splits go through one pipeline, so the blur actors start once per stage (importing torch and kornia
    costs each actor seconds). The plan arrives as blocks of ``batch_rows`` rows that never span two splits, each
    block one batch, so every actor has blocks to take from the start; the blurred blocks stay in the object
    store until both splits' shards are written.
    """
    import pyarrow as pa
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # deterministic row order -> identical shards
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    plans = {split: plan_crops(records, split, pairs) for split in SPLITS}
    for split, rows in plans.items():
        if not rows:
            raise ValueError(f"{ingested_dir}/manifest.json: the {split!r} split has no usable images")
    real = plan_paired_crops(paired, pairs) if paired else []
    if real:  # one set of columns for every row; real pairs join val only
        plans = {
            split: [row | {"blurred_file": "", "pair_params": ""} for row in rows] for split, rows in plans.items()
        }
        plans["val"] = plans["val"] + real
    blocks = [
        pa.Table.from_pylist(rows[i : i + pairs.batch_rows])
        for rows in plans.values()
        for i in range(0, len(rows), pairs.batch_rows)
    ]
    blurred = (
        ray.data.from_arrow(blocks)
        .map_batches(
            BlurPairs,
            fn_constructor_kwargs={
                "ingested_dir": str(ingested_dir.resolve()),
                "noise_sigma_max": degrade.noise_sigma_max,
                "jpeg_quality_min": degrade.jpeg_quality_min,
            },
            batch_size=None,  # one block, one batch: a block's rows are one split's
            compute=ray.data.ActorPoolStrategy(size=pairs.num_actors),
            num_gpus=1 if use_gpu else 0,
            num_cpus=0 if use_gpu else 1,
        )
        .materialize()
    )
    parts = blurred.split_at_indices([len(plans["val"])])
    for split, part in zip(SPLITS, parts, strict=True):
        part.write_parquet(
            f"{out_root}/{split}",
            filename_provider=_deterministic_names(split),
            min_rows_per_file=max(pairs.batch_rows, 256),
            mode=ray.data.SaveMode.OVERWRITE,
        )
    return {split: len(rows) for split, rows in plans.items()}


def _deterministic_names(split: str) -> Any:
    """Shard names from the split and the write task's index, not from a random write id."""
    from ray.data.datasource import FilenameProvider

    class DeterministicNames(FilenameProvider):  # type: ignore[misc]
        def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
            return f"{split}-{task_index:05d}.parquet"

        def get_filename_for_block(self, block: Any, write_uuid: str, task_index: int, block_index: int) -> str:
            return f"{split}-{task_index:05d}-{block_index:03d}.parquet"

    return DeterministicNames()


# --------------------------------------------------------------------------------------------- reading shards
def decode_pairs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data batch transform: PNG bytes -> float32 (N, 3, H, W) ``sharp`` and ``blurred`` in [0, 1], and, when
    the batch has ``family``, ``family_index`` (its position in :data:`bdirnet.degrade.FAMILIES`, or
    :data:`PAIRED_SLOT` for a real pair, whose family is its dataset's name)."""
    out = {}
    for column in ("sharp", "blurred"):
        out[column] = to_float_array(np.stack([decode_png(data) for data in batch[column]]))
    if "family" in batch:
        index = {name: i for i, name in enumerate(FAMILIES)}
        empty = [str(f) for f in batch["family"] if not str(f)]
        if empty:
            raise ValueError(f"pairs: {len(empty)} row(s) without a family in the shards")
        out["family_index"] = np.array([index.get(str(f), PAIRED_SLOT) for f in batch["family"]], dtype=np.int64)
    return out


def read_pair_shard(uri: str, index: int, count: int) -> dict[str, np.ndarray]:
    """Share ``index`` of ``count`` of the decoded pairs in a folder of Parquet shards (a local folder or
    ``s3://...``): every ``count``-th row from row ``index``, as :func:`decode_pairs` returns them.

    Each Ray Train worker reads its share of the val pairs in its own process: a Ray Data pipeline for a few hundred
    pairs cost ~10 s a run on 2 cores (its read and decode tasks start worker processes that import torch).
    """
    import pyarrow.dataset as ds
    import pyarrow.fs

    location = uri if "://" in uri else str(Path(uri).resolve())
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    try:
        table = ds.dataset(path, filesystem=filesystem, format="parquet").to_table(
            columns=["sharp", "blurred", "family"]
        )
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"{uri}: cannot read the pairs shards ({error})") from None
    rows = table.take(np.arange(index, table.num_rows, count))
    return decode_pairs({name: rows.column(name).to_numpy(zero_copy_only=False) for name in rows.column_names})
