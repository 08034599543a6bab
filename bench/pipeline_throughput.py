"""Pipeline throughput, measured side by side in one run (issue "Make Ray pay for itself"):

1. Ray start-up: a stage that starts its own local Ray vs one that joins the study's head (``bdirnet with-ray``).
2. The pairs stage: Ray Data (1 and 2 actors) vs a plain in-process loop over the same plan, both blurring,
   PNG-encoding and writing Parquet, at one torch thread per actor / for the loop (per core).
3. Training: Ray Train (1 worker; 2 DDP workers) on the on-the-fly stream (blur actors feeding the workers) vs a
   plain loop that blurs the same pairs and steps the same model in this process, at the same total core count.
4. Per-run overhead: a run's wall time that is not training steps (Ray Train start, validation, checkpoints,
   MLflow), from the same Ray Train runs.

Run: ``.venv/bin/python bench/pipeline_throughput.py [--crops 16] [--copies 8] [--samples 1024] [--json FILE]``.
The data are the bundled scikit-image photos: the pairs volume is every photo, listed ``--copies`` times, as a
val/test photo with ``--crops`` 128 px crops under every family (printed; the default 7,248 pairs take the plain loop
~40 s, so the stage's few seconds of actor start-up no longer dominate); training runs ``--epochs`` epochs of
``--samples`` 96 px pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import DegradeConfig, IngestConfig, PairsConfig, TrainConfig
from bdirnet.datasets import bundle_skimage_photos, ingest_folder, read_manifest
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import TrainingModule
from bdirnet.pairs import BlurPairs, plan_crops, write_pairs
from bdirnet.runtime import init_ray, shutdown_ray
from bdirnet.streaming import TrainPairMaker, make_plan, read_photos, to_float

JOIN = (
    "import time; t = time.perf_counter(); from bdirnet.runtime import init_ray; init_ray(); "
    "print(time.perf_counter() - t)"
)


def ray_startup(workdir: Path) -> tuple[float, float]:
    """Seconds for a fresh process to get a Ray session: starting its own local Ray, and joining a running head."""
    env = os.environ | {"BDIRNET_RAY_TMP": str(workdir / "ray-own")}
    env.pop("RAY_ADDRESS", None)
    own = float(subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True).stdout)
    script = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {JOIN!r}])"
    joined = subprocess.run(
        [sys.executable, "-m", "bdirnet.cli", "with-ray", "--", sys.executable, "-c", script],
        env=os.environ | {"BDIRNET_RAY_TMP": str(workdir / "ray-head")},
        capture_output=True,
        text=True,
    ).stdout
    return own, float(joined.strip().splitlines()[-1])


def plain_pairs(rows: list[dict[str, Any]], ingested: Path, degrade: DegradeConfig, batch: int, out: Path) -> float:
    """The pairs stage's per-row work in this process: crop, blur, PNG, Parquet. Pairs/s."""
    blur = BlurPairs(str(ingested), degrade.noise_sigma_max, degrade.jpeg_quality_min)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        done = blur({key: np.array([row[key] for row in chunk]) for key in chunk[0]})
        pq.write_table(pa.table({k: list(v) for k, v in done.items()}), out / f"{i:06d}.parquet")
    return len(rows) / (time.perf_counter() - start)


def bench_pairs(workdir: Path, crops: int, copies: int) -> dict[str, float]:
    # Every photo gives val/test pairs (the val photos stay val, all others become test), each photo listed
    # `copies` times under its own name (other seeds, other pair ids) for a volume where start-up no longer dominates.
    records = [
        dataclasses.replace(r, name=f"{r.name}~{copy}" if copy else r.name, split="val" if r.split == "val" else "test")
        for r in read_manifest(workdir / "ingested")
        for copy in range(copies)
    ]
    config = PairsConfig(
        val_crop_px=128,
        val_crops_per_image=crops,
        test_crop_px=128,
        test_crops_per_image=crops,
        min_texture=0.0,
        batch_rows=32,
    )
    rows = plan_crops(records, "val", config) + plan_crops(records, "test", config)
    degrade = DegradeConfig()
    print(f"\n2. pairs stage: {len(rows)} pairs of 128² (15 photos x {copies} copies x up to {crops} crops x every "
          "family)")  # fmt: skip
    torch.set_num_threads(1)
    plain = plain_pairs(rows, workdir / "ingested", degrade, config.batch_rows, workdir / "plain-pairs")
    torch.set_num_threads(os.cpu_count() or 1)
    # Ray Data's first use in a driver (its stats and autoscaling actors) is paid once per stage, before either
    # timed run, so that 1 and 2 actors are compared on the same footing; it is printed on its own.
    import ray

    start = time.perf_counter()
    ray.data.range(1).materialize()
    first_use = time.perf_counter() - start
    rates = {}
    for actors in (1, 2):
        start = time.perf_counter()
        counts = write_pairs(
            records,
            workdir / "ingested",
            str(workdir / f"pairs{actors}"),
            dataclasses.replace(config, num_actors=actors),
            degrade,
        )
        rates[actors] = sum(counts.values()) / (time.perf_counter() - start)
    print(f"   Ray Data's first use in the stage: {first_use:.1f}s (not in the rates below)")
    print(f"   plain loop, 1 thread     {plain:7.1f} pairs/s")
    for actors, rate in rates.items():
        print(f"   Ray Data, {actors} actor(s)     {rate:7.1f} pairs/s  ({rate / actors / plain:.2f}x plain per core)")
    print(f"   2 actors vs 1: {rates[2] / rates[1]:.2f}x")
    return {
        "pairs_ray_vs_plain": rates[1] / plain,
        "pairs_actor_scaling": rates[2] / rates[1],
        "pairs_volume": float(len(rows)),
        "ray_data_first_use_s": first_use,
    }


def plain_training(
    workdir: Path, model_config: ModelConfig, train: TrainConfig, samples: int, threads: int, limit_s: float = 60.0
) -> float:
    """Blur the stream's pairs and step the model in this process at ``threads`` torch threads: samples/s (over
    ``samples``, or the steps done in ``limit_s``)."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    degrade = DegradeConfig()
    plan = make_plan(read_manifest(workdir / "ingested"), workdir / "ingested", 96, 0, samples, degrade)
    maker = TrainPairMaker(plan, read_photos(plan))
    module = TrainingModule(BDIRNet(model_config), train.loss).to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(module, train, total_steps=samples // train.batch_size)
    maker({"id": np.arange(train.batch_size)})  # decode the photos once, as a warm actor has
    start = time.perf_counter()
    steps = 0
    for step in range(samples // train.batch_size):
        if time.perf_counter() - start > limit_s:
            break
        batch = maker({"id": np.arange(step * train.batch_size, (step + 1) * train.batch_size)})
        train_step(
            module,
            optimizer,
            to_float(torch.from_numpy(batch["blurred"])).contiguous(memory_format=torch.channels_last),
            to_float(torch.from_numpy(batch["sharp"])).contiguous(memory_format=torch.channels_last),
            step,
            bf16=train.bf16_autocast,
        )
        steps += 1
    return steps * train.batch_size / (time.perf_counter() - start)


def ray_training(workdir: Path, model_config: ModelConfig, train: TrainConfig) -> dict[str, float]:
    """One Ray Train run on the stream: steady samples/s (per epoch, as logged) and the wall time of the run."""
    from mlflow import MlflowClient

    from bdirnet import registry
    from bdirnet.training import fit

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    experiment = registry.ensure_experiment(uri, workdir / "mlartifacts")
    name = f"bench-{train.num_workers}"
    run_id = registry.find_or_start_run(uri, experiment, name, {})
    plan = make_plan(
        read_manifest(workdir / "ingested"), workdir / "ingested", 96, 0, train.samples_per_epoch, DegradeConfig()
    )
    started = time.perf_counter()
    fit(
        plan,
        str(workdir / "pairs2/val"),
        model_config,
        train,
        DegradeConfig(),
        str(workdir / "ckpt"),
        name,
        uri,
        run_id,
    )
    wall = time.perf_counter() - started
    rates = [m.value for m in MlflowClient(uri).get_metric_history(run_id, "samples_per_second")]
    steady = float(np.mean(rates[1:] if len(rates) > 1 else rates))
    steps_seconds = sum(train.samples_per_epoch / r for r in rates)
    return {"samples_per_second": steady, "wall": wall, "overhead": wall - steps_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=16, help="128 px crops per photo for the pairs volume")
    parser.add_argument("--copies", type=int, default=8, help="times each photo is listed, for the pairs volume")
    parser.add_argument("--samples", type=int, default=1024, help="training pairs per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the ratios as JSON")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    workdir = Path(tempfile.mkdtemp(prefix="bdr-bench-", dir="/tmp"))
    try:
        bundle_skimage_photos(workdir / "raw")
        ingest_folder(workdir / "raw", workdir / "ingested", IngestConfig(min_test_photos=0, min_val_photos=0))
        print(f"{os.cpu_count()} cores; torch {torch.__version__}")
        own, joined = ray_startup(workdir)
        print(f"1. Ray for a stage: start its own {own:.1f}s, join the study's head {joined:.1f}s")

        os.environ["BDIRNET_RAY_TMP"] = str(workdir / "ray")
        init_ray()
        ratios = bench_pairs(workdir, args.crops, args.copies)
        # Val pairs for the training runs (the skimage val split, 64 px crops under every family).
        records = read_manifest(workdir / "ingested")
        write_pairs(
            records, workdir / "ingested", str(workdir / "pairs2"), PairsConfig(val_crop_px=64), DegradeConfig()
        )

        model_config = ModelConfig(width_channels=args.width)
        total = args.samples * args.epochs
        print(f"\n3. training: width {args.width}, batch 8 per worker, 96² pairs made on the fly, {args.epochs} "
              f"epochs of {args.samples}")  # fmt: skip
        runs = {}
        for workers in (1, 2):
            train = TrainConfig(num_workers=workers, max_epochs=args.epochs, samples_per_epoch=args.samples,
                                run_name=f"bench{workers}")  # fmt: skip
            runs[workers] = ray_training(workdir, model_config, train)
        shutdown_ray()
        # The plain loop at its better thread count: every core, or one (on a shared machine, OpenMP threads that
        # wait for a preempted peer can make every core slower than one).
        plains = {
            threads: plain_training(workdir, model_config, TrainConfig(), min(total, 512), threads)
            for threads in sorted({1, os.cpu_count() or 1})
        }
        plain = max(plains.values())
        for threads, rate in plains.items():
            print(f"   plain loop (blur + step), {threads} thread(s)  {rate:6.1f} samples/s")
        for workers, run in runs.items():
            print(f"   Ray Train, {workers} worker(s)    {run['samples_per_second']:6.1f} samples/s "
                  f"({run['samples_per_second'] / plain:.2f}x plain)")  # fmt: skip
        print("\n4. per-run overhead (wall time that is not training steps: Ray Train start, validation, checkpoints,")
        print("   MLflow)")
        for workers, run in runs.items():
            print(f"   {workers} worker(s): {run['overhead']:.1f}s of {run['wall']:.1f}s")
        best = max(runs.values(), key=lambda r: r["samples_per_second"])
        ratios |= {
            "train_ray_vs_plain": best["samples_per_second"] / plain,
            "train_ray_1_worker_vs_plain": runs[1]["samples_per_second"] / plain,
            "train_ray_2_workers_vs_plain": runs[2]["samples_per_second"] / plain,
            "overhead_s_per_run": best["overhead"],
            "ray_start_own_s": own,
            "ray_join_head_s": joined,
        }
        print("\n" + json.dumps({k: round(v, 3) for k, v in ratios.items()}, indent=2))
        if args.json:
            args.json.write_text(json.dumps({k: round(v, 4) for k, v in ratios.items()}, indent=2) + "\n")
    finally:
        shutdown_ray()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
