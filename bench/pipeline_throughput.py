"""Pipeline throughput, measured side by side in one run:

1. the pairs stage (Ray Data, actor pool) with 1 vs 2 actors, and a plain in-process loop over the same plan;
2. training samples/s through Ray Train (1 and 2 workers, DDP for 2) vs a plain PyTorch loop over the same
   model, objective and decoded pairs in this process.

Ray start-up is reported separately: on 2 cores it costs seconds, which small jobs never earn back.

Run: ``.venv/bin/python bench/pipeline_throughput.py [--patches 64] [--steps 40]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import DegradeConfig, IngestConfig, PairsConfig, TrainConfig
from bdirnet.datasets import bundle_skimage_photos, ingest_folder, read_manifest
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import TrainingModule
from bdirnet.pairs import BlurPairs, plan_crops, write_pairs
from bdirnet.runtime import init_ray, shutdown_ray
from bdirnet.training import decode_pairs


def plain_pairs(rows: list[dict[str, object]], ingested: Path, degrade: DegradeConfig, batch: int) -> float:
    blur = BlurPairs(str(ingested), degrade.noise_sigma_max, degrade.jpeg_quality_min)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        blur({key: np.array([row[key] for row in chunk]) for key in chunk[0]})
    return len(rows) / (time.perf_counter() - start)


def plain_training(pairs_dir: Path, model_config: ModelConfig, train: TrainConfig, steps: int) -> float:
    torch.manual_seed(0)
    table = pq.read_table(pairs_dir / "train", columns=["sharp", "blurred"])
    decoded = decode_pairs({"sharp": table["sharp"].to_numpy(), "blurred": table["blurred"].to_numpy()})
    module = TrainingModule(BDIRNet(model_config), train.loss).to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(module, train, total_steps=steps)
    sharp_all, blurred_all = torch.from_numpy(decoded["sharp"]), torch.from_numpy(decoded["blurred"])
    batch = train.batch_size
    start = time.perf_counter()
    for step in range(steps):
        index = torch.arange(step * batch, (step + 1) * batch) % sharp_all.shape[0]
        train_step(
            module,
            optimizer,
            blurred_all[index].contiguous(memory_format=torch.channels_last),
            sharp_all[index].contiguous(memory_format=torch.channels_last),
            step,
            bf16=train.bf16_autocast,
        )
    return steps * batch / (time.perf_counter() - start)


def ray_training(pairs_dir: Path, model_config: ModelConfig, train: TrainConfig, workdir: Path) -> tuple[float, float]:
    from bdirnet import registry
    from bdirnet.training import fit

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    experiment = registry.ensure_experiment(uri, workdir / "mlartifacts")
    run_id = registry.find_or_start_run(uri, experiment, f"bench-{train.num_workers}", {})
    started = time.perf_counter()
    result = fit(str(pairs_dir), model_config, train, str(workdir / "ckpt"), f"bench-{train.num_workers}", uri, run_id)
    wall = time.perf_counter() - started
    from mlflow import MlflowClient

    samples_per_second = MlflowClient(uri).get_metric_history(run_id, "samples_per_second")[-1].value
    del result
    return samples_per_second, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patches", type=int, default=64, help="train patches per image")
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    workdir = Path(tempfile.mkdtemp(prefix="bdr-bench-"))
    try:
        bundle_skimage_photos(workdir / "raw")
        ingest_folder(workdir / "raw", workdir / "ingested", IngestConfig())
        records = read_manifest(workdir / "ingested")
        degrade = DegradeConfig()
        rows = plan_crops(records, "train", PairsConfig(train_patches_per_image=args.patches), degrade)

        print(f"1. pairs stage: {len(rows)} train pairs of 96² ({os.cpu_count()} cores)")
        plain_rate = plain_pairs(rows, workdir / "ingested", degrade, 64)
        start = time.perf_counter()
        init_ray()
        startup = time.perf_counter() - start
        rates = {}
        for actors in (1, 2):
            config = PairsConfig(train_patches_per_image=args.patches, val_patches_per_image=2, test_crops_per_side=1,
                                 num_actors=actors)  # fmt: skip
            start = time.perf_counter()
            counts = write_pairs(records, workdir / "ingested", str(workdir / f"pairs{actors}"), config, degrade)
            rates[actors] = sum(counts.values()) / (time.perf_counter() - start)
        print(f"   Ray start-up {startup:.1f}s")
        print(f"   plain loop (no Ray)     {plain_rate:7.1f} pairs/s")
        print(f"   Ray Data, 1 actor       {rates[1]:7.1f} pairs/s")
        print(f"   Ray Data, 2 actors      {rates[2]:7.1f} pairs/s   2 vs 1 actor: {rates[2] / rates[1]:.2f}x, "
              f"2 actors vs plain: {rates[2] / plain_rate:.2f}x")  # fmt: skip

        model_config = ModelConfig(width_channels=args.width)
        pairs_dir = workdir / "pairs2"
        n_train = sum(pq.read_metadata(path).num_rows for path in (pairs_dir / "train").glob("*.parquet"))
        print(f"\n2. training, width {args.width}, batch 8 per worker, full objective, bf16 + channels_last")
        results = {}
        for workers in (1, 2):
            train = TrainConfig(num_workers=workers, max_epochs=1, run_name=f"bench{workers}")
            results[workers] = ray_training(pairs_dir, model_config, train, workdir)
        shutdown_ray()
        steps = max(10, n_train // 8 // 4)
        plain = plain_training(pairs_dir, model_config, TrainConfig(), steps)
        print(f"   plain PyTorch loop       {plain:6.1f} samples/s")
        for workers, (rate, wall) in results.items():
            print(f"   Ray Train, {workers} worker(s)   {rate:6.1f} samples/s ({rate / plain:.2f}x plain), "
                  f"wall {wall:.0f}s for one epoch of {n_train} pairs incl. start-up")  # fmt: skip
    finally:
        shutdown_ray()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
