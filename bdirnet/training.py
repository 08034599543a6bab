"""Ray Train: ``train_loop_per_worker`` and the ``TorchTrainer`` that runs it.

Each worker takes its split of the on-the-fly training stream (:mod:`bdirnet.streaming`: fresh pairs every epoch,
``get_dataset_shard("train").iter_torch_batches``) and of the materialised val pairs, trains with
:func:`bdirnet.engine.train_step` (DDP through ``prepare_model`` when there is more than one worker), computes the
validation PSNR per family each epoch (summed over workers), and rank 0 logs to MLflow and saves the checkpoint
(model, objective, optimiser, scheduler, epoch, step). Rerunning with the same run name and storage path resumes
from the latest checkpoint (``ray.train.get_checkpoint()``; the stream starts at the first unfinished epoch); the
best checkpoint by validation PSNR (the mean over every val pair: training families, held-out families and
``none``) is what gets registered.

Faults: a worker that dies (a killed process, a lost node) is replaced up to ``train.max_failures`` times
(``FailureConfig``); the new worker group restores the latest checkpoint and skips the stream's batches of the
epochs it covers, so at most one epoch of steps is lost. A loss that turns NaN/inf stops the run at that step
without retries (it would diverge again) and keeps the checkpoints written before it: :class:`TrainingFailed`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdirnet.config import DegradeConfig, ModelConfig, TrainConfig, from_mapping, to_dict
from bdirnet.engine import NonFiniteLoss, build_optimizer, train_step
from bdirnet.images import to_uint8
from bdirnet.losses import TrainingModule
from bdirnet.metrics import family_group, psnr
from bdirnet.model import build_model
from bdirnet.pairs import VAL_SLOTS, read_pair_shard
from bdirnet.streaming import StreamPlan, to_float, training_stream

CHECKPOINT_FILE = "state.pt"
CONFIG_FILE = "config.json"


NONFINITE_TAG = "nonfinite_loss"  # MLflow run tag: where the loss diverged (JSON: step, epoch, message)


class TrainingFailed(RuntimeError):
    """A run stopped for good (diverged, or more worker failures than ``train.max_failures``); the message names
    the run, the step or the error, and the checkpoint that is kept."""


def run_name(train: TrainConfig, model: ModelConfig, data_hash: str) -> str:
    """``<run_name>-<hash>``: the hash covers everything that defines the run except ``max_epochs``."""
    train_identity = to_dict(train)
    train_identity.pop("max_epochs")
    train_identity.pop("max_failures")
    for key in ("paired_share", "paired_datasets"):  # runs without real pairs keep the names they had before them
        if not train_identity[key]:
            train_identity.pop(key)
    identity = {"model": to_dict(model), "train": train_identity, "data": data_hash}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    return f"{train.run_name}-{digest}"


def image_grid(blurred: torch.Tensor, restored: torch.Tensor, sharp: torch.Tensor, rows: int = 4) -> np.ndarray:
    """blurred | restored | sharp, one row per image, as an (H, W, 3) uint8 array."""
    n = min(rows, blurred.shape[0])
    tiles = torch.cat([torch.cat([blurred[i], restored[i], sharp[i]], dim=-1) for i in range(n)], dim=-2)
    return to_uint8(tiles[None].float())[0]


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]
    return values


@dataclass
class WorkerState:
    """What one Ray Train worker carries from epoch to epoch."""

    module: TrainingModule  # the unwrapped network + objective
    wrapped: torch.nn.Module  # what steps go through: DDP(module) when world_size > 1, else module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_epoch: int = 0
    step: int = 0
    best_val_psnr: float = -math.inf
    recoveries: int = 0  # worker-group restarts this run has come back from (saved in the checkpoint)


def restore_checkpoint(state: WorkerState) -> None:
    """Load the latest checkpoint of this Ray run into ``state`` (when there is one), ``weights_only``. (A run that
    has no epochs left is refused by :func:`fit` before any worker starts.)"""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    state.module.network.load_state_dict(saved["model"])
    state.module.objective.load_state_dict(saved["objective"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.start_epoch, state.step, state.best_val_psnr = saved["epoch"] + 1, saved["step"], saved["best_val_psnr"]
    state.recoveries = int(saved.get("recoveries", 0))
    if ray.train.get_context().get_world_rank() == 0:
        print(f"[train] resuming from epoch {state.start_epoch} (step {state.step}, "
              f"best val PSNR {state.best_val_psnr:.2f})")  # fmt: skip


def train_epoch(
    state: WorkerState, config: TrainConfig, batches: Iterator[dict[str, torch.Tensor]], steps: int
) -> tuple[dict[str, float], int]:
    """``steps`` steps on the next batches of this worker's stream; returns the mean loss parts and samples seen."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    sums: dict[str, float] = {}
    seen = 0
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            raise RuntimeError(f"the training stream ended early: {seen} samples into an epoch of {steps} steps")
        blurred = to_float(batch["blurred"]).contiguous(memory_format=memory_format)
        sharp = to_float(batch["sharp"]).contiguous(memory_format=memory_format)
        result = train_step(
            state.wrapped,
            state.optimizer,
            blurred,
            sharp,
            state.step,
            bf16=config.bf16_autocast,
            grad_clip_norm=config.grad_clip_norm,
        )
        state.scheduler.step()
        state.step += 1
        seen += blurred.shape[0]
        for key, value in result.parts.items():
            sums[key] = sums.get(key, 0.0) + value
    return {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}, seen


@dataclass
class ValSums:
    """Per-family sums over one worker's val pairs (indexed like :data:`bdirnet.pairs.VAL_SLOTS`: the zoo's families,
    then every real pair)."""

    restored: np.ndarray  # PSNR sums of the network's output
    blurred: np.ndarray  # PSNR sums of the blurred input
    count: np.ndarray

    def vector(self) -> list[float]:
        return [*self.restored.tolist(), *self.blurred.tolist(), *self.count.tolist()]

    @classmethod
    def from_vector(cls, values: list[float]) -> ValSums:
        n = len(VAL_SLOTS)
        return cls(*(np.array(values[i * n : (i + 1) * n]) for i in range(3)))


def val_metrics(sums: ValSums, degrade: DegradeConfig) -> dict[str, float]:
    """``val_psnr`` (mean over every val pair), and per family and group the PSNR and gain over the input."""
    metrics = {"val_psnr": float(sums.restored.sum() / max(sums.count.sum(), 1.0))}
    gains: dict[str, float] = {}
    for i, family in enumerate(VAL_SLOTS):
        if sums.count[i] > 0:
            metrics[f"val_psnr_{family}"] = float(sums.restored[i] / sums.count[i])
            gains[family] = float((sums.restored[i] - sums.blurred[i]) / sums.count[i])
            metrics[f"val_gain_{family}"] = gains[family]
    for group in ("in_family", "held_out"):  # `none` and `paired` alone are groups: logged above
        present = [gain for f, gain in gains.items() if family_group(f, degrade.held_out_families) == group]
        if present:
            metrics[f"val_gain_{group}"] = float(np.mean(present))
    return metrics


def val_batches(uri: str, rank: int, world_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """This worker's share of the val pairs (every ``world_size``-th pair from ``rank``), decoded once and kept:
    every epoch scores the same pairs, so reading and decoding the shards again each epoch would only cost time."""
    shard = {name: torch.from_numpy(array).to(device) for name, array in read_pair_shard(uri, rank, world_size).items()}
    count = len(shard["family_index"])
    return [{name: tensor[i : i + 16] for name, tensor in shard.items()} for i in range(0, count, 16)]


def validate_epoch(
    network: torch.nn.Module, batches: list[dict[str, torch.Tensor]], bf16: bool
) -> tuple[ValSums, np.ndarray | None]:
    """Per-family PSNR sums over this worker's val pairs (the network under bf16 autocast when training uses it,
    PSNR in float32), and a blurred | restored | sharp grid."""
    network.eval()
    n = len(VAL_SLOTS)
    sums = ValSums(np.zeros(n), np.zeros(n), np.zeros(n))
    grid = None
    with torch.no_grad():
        for batch in batches:
            device_type = batch["blurred"].device.type
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                restored = network(batch["blurred"]).float()
            family = batch["family_index"].cpu().numpy()
            np.add.at(sums.restored, family, psnr(restored, batch["sharp"]).cpu().numpy())
            np.add.at(sums.blurred, family, psnr(batch["blurred"], batch["sharp"]).cpu().numpy())
            np.add.at(sums.count, family, 1.0)
            if grid is None:
                grid = image_grid(batch["blurred"], restored, batch["sharp"])
    network.train()
    return sums, grid


def save_checkpoint(state: WorkerState, model_config: ModelConfig, epoch: int, metrics: dict[str, float]) -> None:
    """Rank 0: report the epoch's metrics with a checkpoint (network, objective, optimiser, scheduler, counters)."""
    import ray.train

    with tempfile.TemporaryDirectory() as directory:
        saved = {
            "model": state.module.network.state_dict(),
            "objective": state.module.objective.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "epoch": epoch,
            "step": state.step,
            "best_val_psnr": state.best_val_psnr,
            "recoveries": state.recoveries,
        }
        torch.save(saved, Path(directory) / CHECKPOINT_FILE)
        (Path(directory) / CONFIG_FILE).write_text(json.dumps({"model": to_dict(model_config)}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function: build, resume, then per epoch train, validate, log and checkpoint."""
    import ray
    import ray.train
    import ray.train.torch

    from bdirnet import registry

    model_config = from_mapping(ModelConfig, loop_config["model"], "model")
    train_config = from_mapping(TrainConfig, loop_config["train"], "train")
    degrade_config = from_mapping(DegradeConfig, loop_config["degrade"], "degrade")
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    print(f"[train] worker {rank}/{world_size} on node {ray.get_runtime_context().get_node_id()}")
    torch.set_num_threads(int(loop_config["threads_per_worker"]))
    torch.manual_seed(train_config.seed)
    total_steps = int(loop_config["steps_per_epoch"]) * train_config.max_epochs

    module = TrainingModule(build_model(model_config), train_config.loss)
    optimizer, scheduler = build_optimizer(module, train_config, total_steps)
    state = WorkerState(module=module, wrapped=module, optimizer=optimizer, scheduler=scheduler)
    restore_checkpoint(state)
    device = ray.train.torch.get_device()
    memory_format = torch.channels_last if train_config.channels_last else torch.contiguous_format
    module.to(device).to(memory_format=memory_format)  # type: ignore[call-overload]
    state.wrapped = ray.train.torch.prepare_model(module, move_to_device=False)  # DDP when world_size > 1
    uri, run_id = loop_config["tracking_uri"], loop_config["mlflow_run_id"]
    first_epoch, steps_per_epoch = int(loop_config["first_epoch"]), int(loop_config["steps_per_epoch"])
    if state.start_epoch < first_epoch:
        raise RuntimeError(
            f"run {loop_config.get('run_name')}: the checkpoint resumes at epoch {state.start_epoch} but the "
            f"training stream was planned from epoch {first_epoch}"
        )
    # One pass over the stream of every remaining epoch: each epoch takes its own fresh pairs.
    stream = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=train_config.batch_size, drop_last=True, device=device, prefetch_batches=2
    )
    batches = iter(stream)
    if state.start_epoch > first_epoch:
        # A worker group restarted after a failure in this fit: its stream starts again at the planned first
        # epoch, so the batches of the epochs the checkpoint covers are drawn and dropped (same draws as before).
        state.recoveries += 1
        skipped = (state.start_epoch - first_epoch) * steps_per_epoch
        if rank == 0:
            print(f"[train] recovered from a worker failure (#{state.recoveries}): resuming at epoch "
                  f"{state.start_epoch + 1}, skipping the {skipped} batches of checkpointed epochs")  # fmt: skip
        for _ in range(skipped):
            if next(batches, None) is None:
                raise RuntimeError(f"the training stream ended while skipping {skipped} checkpointed batches")
    val: list[dict[str, torch.Tensor]] | None = None

    for epoch in range(state.start_epoch, train_config.max_epochs):
        started = time.perf_counter()
        try:
            metrics, seen = train_epoch(state, train_config, batches, steps_per_epoch)
        except NonFiniteLoss as error:
            # Every rank sees the same all-reduced gradient norm, so all stop here together. Not raised: Ray would
            # retry from the checkpoint into the same divergence. Rank 0 tags the MLflow run; fit() reads it.
            if rank == 0:
                record = {"step": error.step, "epoch": epoch, "message": str(error)}
                registry.set_run_tag(uri, run_id, NONFINITE_TAG, json.dumps(record))
            return
        train_seconds = time.perf_counter() - started
        if val is None:
            val = val_batches(loop_config["val_uri"], rank, world_size, device)
        sums, grid = validate_epoch(module.network, val, train_config.bf16_autocast)
        *reduced, samples = _all_reduce_sum([*sums.vector(), float(seen)], device)
        metrics |= val_metrics(ValSums.from_vector(reduced), degrade_config)
        val_psnr = metrics["val_psnr"]
        state.best_val_psnr = max(state.best_val_psnr, val_psnr)
        metrics |= {
            "best_val_psnr": state.best_val_psnr,
            "epoch": float(epoch),
            "step": float(state.step),
            "lr": float(scheduler.get_last_lr()[0]),
            "samples_per_second": samples / max(train_seconds, 1e-9),
            "recoveries": float(state.recoveries),
        }
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            continue
        print(
            f"[train] epoch {epoch + 1}/{train_config.max_epochs} step {state.step} "
            f"loss {metrics.get('train_loss_total', float('nan')):.4f} val PSNR {val_psnr:.2f} dB, gain "
            f"{metrics.get('val_gain_in_family', float('nan')):+.2f} in-family "
            f"{metrics.get('val_gain_held_out', float('nan')):+.2f} held-out "
            f"{metrics.get('val_gain_none', float('nan')):+.2f} none "
            f"({metrics['samples_per_second']:.1f} samples/s, {world_size} worker(s))"
        )
        registry.log_metrics(uri, run_id, metrics, step=epoch)
        if grid is not None:
            registry.log_image(uri, run_id, grid, f"grids/val_epoch_{epoch:03d}.png")
        save_checkpoint(state, model_config, epoch, metrics)
    # The stream holds exactly the planned epochs' batches: one left over means the epochs trained on other pairs
    # than planned (e.g. a resumed worker that did not skip the checkpointed epochs).
    if state.start_epoch < train_config.max_epochs and next(batches, None) is not None:
        raise RuntimeError(
            f"run {loop_config.get('run_name')}: worker {rank}'s training stream still holds batches after the last "
            "epoch: the epochs did not train on the planned pairs"
        )


def worker_resources() -> dict[str, float]:
    """Ray resources of one Train worker: 1 CPU, plus ``BDIRNET_TRAIN_WORKER_RESOURCES`` (a JSON object, e.g.
    ``{"train_slot": 1}`` to place one worker per node that advertises one slot)."""
    extra = os.environ.get("BDIRNET_TRAIN_WORKER_RESOURCES", "").strip()
    resources: dict[str, float] = {"CPU": 1.0}
    if extra:
        try:
            parsed = json.loads(extra)
        except json.JSONDecodeError as error:
            raise ValueError(f"BDIRNET_TRAIN_WORKER_RESOURCES is not JSON: {error}") from None
        if not isinstance(parsed, dict):
            raise ValueError("BDIRNET_TRAIN_WORKER_RESOURCES must be a JSON object of resource: amount")
        resources |= {str(k): float(v) for k, v in parsed.items()}
    return resources


@dataclass
class FitResult:
    run_name: str
    best_checkpoint: str
    best_val_psnr: float
    latest_checkpoint: str
    epochs: int
    wall_seconds: float
    recoveries: int = 0  # worker failures the run recovered from


def completed_epochs(storage_path: str, name: str) -> int:
    """Epochs a Ray Train run of this name has already checkpointed in ``storage_path`` (0 for a new run)."""
    result = _saved_result(storage_path, name)
    return int(result.metrics["epoch"]) + 1 if result is not None else 0


def _saved_result(storage_path: str, name: str) -> Any:
    """The ``ray.train.Result`` of run ``name``'s registered checkpoints, or None when it has no checkpoint yet
    (no run folder, no checkpoint snapshot in it, or no epoch reported)."""
    import ray.train

    try:
        result = ray.train.Result.from_path(f"{storage_path.rstrip('/')}/{name}")
    except (RuntimeError, FileNotFoundError):
        return None
    has_epoch = result.checkpoint is not None and result.metrics and "epoch" in result.metrics
    return result if has_epoch else None


def fit(
    plan: StreamPlan,
    val_uri: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    degrade_config: DegradeConfig,
    storage_path: str,
    name: str,
    tracking_uri: str,
    mlflow_run_id: str,
) -> FitResult:
    """Run (or resume) the TorchTrainer on the on-the-fly stream of ``plan`` and the val pairs; Ray must be
    initialised."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from bdirnet import registry

    started = time.perf_counter()
    steps_per_epoch = train_config.samples_per_epoch // (train_config.batch_size * train_config.num_workers)
    # Whole batches for every worker: the stream holds exactly what the epochs consume.
    plan = replace(plan, samples_per_epoch=steps_per_epoch * train_config.batch_size * train_config.num_workers)
    first_epoch = completed_epochs(storage_path, name)
    if first_epoch >= train_config.max_epochs:
        raise ValueError(
            f"run {name} already trained {first_epoch} epochs >= train.max_epochs {train_config.max_epochs}: raise "
            "max_epochs to train on (the run name ignores max_epochs)"
        )
    use_gpu = train_config.use_gpu and ray.cluster_resources().get("GPU", 0) > train_config.num_workers
    stream = training_stream(plan, first_epoch, train_config.max_epochs, train_config.data_actors, use_gpu)
    # Torch threads per worker: the cores the CPU blur actors leave, shared by the workers. A worker with as many
    # threads as cores beside a busy actor oversubscribes them, and OpenMP threads that wait for a preempted peer
    # stall the whole step (measured: 2 threads beside other work ran 1.6-10x slower per sample than 1).
    cpu_actors = 0 if use_gpu else train_config.data_actors
    cpus = max(1, ((os.cpu_count() or 1) - cpu_actors) // train_config.num_workers)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "model": to_dict(model_config),
            "train": to_dict(train_config),
            "degrade": to_dict(degrade_config),
            "steps_per_epoch": steps_per_epoch,
            "first_epoch": first_epoch,
            "threads_per_worker": cpus,
            "val_uri": val_uri,
            "run_name": name,
            "tracking_uri": tracking_uri,
            "mlflow_run_id": mlflow_run_id,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=train_config.num_workers,
            use_gpu=train_config.use_gpu,
            resources_per_worker=worker_resources(),
        ),
        datasets={"train": stream},
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_psnr", checkpoint_score_order="max"
            ),
            failure_config=ray.train.FailureConfig(max_failures=train_config.max_failures),
        ),
    )
    # The controller polls the workers every 2 s by default: up to 2 s at the start and at the end of every run.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    registry.set_run_tag(tracking_uri, mlflow_run_id, NONFINITE_TAG, None)  # from an earlier attempt
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as error:
        raise TrainingFailed(
            f"run {name}: training failed after {train_config.max_failures} recoveries (train.max_failures): "
            f"{_failure_cause(error)}; {_kept_checkpoint(storage_path, name)}; rerun to resume from it"
        ) from error
    diverged = registry.run_tags(tracking_uri, mlflow_run_id).get(NONFINITE_TAG)
    if diverged:
        record = json.loads(diverged)
        raise TrainingFailed(
            f"run {name}: {record['message']} in epoch {int(record['epoch']) + 1}; training stopped and the step "
            f"was not applied; {_kept_checkpoint(storage_path, name)}. Lower train.lr or keep train.grad_clip_norm "
            "> 0, then rerun"
        )
    if result.checkpoint is None or not result.best_checkpoints:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda item: item[1]["val_psnr"])
    return FitResult(
        run_name=name,
        best_checkpoint=checkpoint_uri(best_checkpoint),
        best_val_psnr=float(best_metrics["val_psnr"]),
        latest_checkpoint=checkpoint_uri(result.checkpoint),
        epochs=int(result.metrics["epoch"]) + 1,
        wall_seconds=time.perf_counter() - started,
        recoveries=int(result.metrics.get("recoveries", 0)),
    )


def _failure_cause(error: BaseException) -> str:
    """The first worker's error of a failed run in one line (Ray's message spans many)."""
    failures: dict[int, BaseException] = getattr(error, "worker_failures", None) or {}
    rank, cause = min(failures.items(), key=lambda item: item[0]) if failures else (None, error)
    first = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    where = f"worker {rank}: " if rank is not None else ""
    return f"{where}{type(cause).__name__}: {first}" if first else f"{where}{type(cause).__name__}"


def _kept_checkpoint(storage_path: str, name: str) -> str:
    """Which checkpoint of run ``name`` survives a failure, as a phrase for the error message."""
    result = _saved_result(storage_path, name)
    if result is None:
        return "no checkpoint had been written yet"
    epoch = int(result.metrics["epoch"]) + 1
    return f"the last good checkpoint (epoch {epoch}) is kept at {checkpoint_uri(result.checkpoint)}"


def checkpoint_uri(checkpoint: Any) -> str:
    """A checkpoint's location as a path (local) or a URI with its scheme (``s3://...``) for later stages."""
    kind = checkpoint.filesystem.type_name
    return str(checkpoint.path) if kind == "local" else f"{kind}://{checkpoint.path}"


def load_checkpoint_model(checkpoint_dir: str) -> torch.nn.Module:
    """The BDIRNet of a checkpoint folder (local path or URI Ray can read), in eval mode."""
    import ray.train

    with ray.train.Checkpoint(checkpoint_dir).as_directory() as directory:
        config = json.loads((Path(directory) / CONFIG_FILE).read_text())
        state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model = build_model(from_mapping(ModelConfig, config["model"], f"{checkpoint_dir}/{CONFIG_FILE}"))
    model.load_state_dict(state["model"])
    return model.eval()
