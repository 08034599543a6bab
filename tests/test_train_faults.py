"""Training faults, for real: a Ray Train worker SIGKILLed mid-epoch, and a loss that turns NaN after a checkpoint.

Both run the real TorchTrainer (2 DDP workers, gloo) on the on-the-fly stream of the bundled photos and real val
pairs; nothing of ours is mocked. The kill is a real ``SIGKILL`` of a worker process found by its Ray process title.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from bdirnet.config import DegradeConfig, LossConfig, ModelConfig, PairsConfig, TrainConfig
from bdirnet.datasets import read_manifest
from bdirnet.engine import NonFiniteLoss, build_optimizer, train_step
from bdirnet.losses import TrainingModule
from bdirnet.model import build_model
from bdirnet.pairs import write_pairs
from bdirnet.streaming import StreamPlan, make_plan
from bdirnet.training import TrainingFailed, completed_epochs, fit

from .conftest import local_ray

MODEL = ModelConfig(width_channels=8, levels=2)
DEGRADE = DegradeConfig()
PATCH_PX = 32
SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray writes it when the controller has registered a checkpoint


@dataclass
class Run:
    """What one fit needs besides its configs: the stream plan, the val pairs and a storage folder."""

    plan: StreamPlan
    val_uri: str
    storage: str
    tracking_uri: str
    mlflow_run_id: str


@pytest.fixture(scope="module")
def ray_for_training() -> Iterator[None]:
    """A local Ray with 4 logical CPUs, as a stage gets on 2 cores: 2 train workers and 1 blur actor hold one each
    (the module's ``ray_session`` of 2 would leave the actor none, and the run would wait forever)."""
    with local_ray(4):
        yield


@pytest.fixture(scope="module")
def prepared(skimage_ingested: Path, tmp_path_factory: pytest.TempPathFactory, ray_for_training: None) -> Run:
    from bdirnet import registry

    root = tmp_path_factory.mktemp("faults")
    records = read_manifest(skimage_ingested)
    pairs = PairsConfig(patch_px=PATCH_PX, val_crop_px=64, test_crop_px=64, test_crops_per_image=1, num_actors=1)
    write_pairs(records, skimage_ingested, str(root / "pairs"), pairs, DEGRADE)
    plan = make_plan(records, skimage_ingested, PATCH_PX, seed=0, samples_per_epoch=512, degrade=DEGRADE)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment = registry.ensure_experiment(uri, artifact_root=root / "mlartifacts")
    run_id = registry.start_run(uri, experiment, "faults", {})
    return Run(plan, str(root / "pairs" / "val"), str(root / "checkpoints"), uri, run_id)


def _fit(run: Run, train: TrainConfig, name: str) -> object:
    plan = replace(run.plan, samples_per_epoch=train.samples_per_epoch)
    return fit(plan, run.val_uri, MODEL, train, DEGRADE, run.storage, name, run.tracking_uri, run.mlflow_run_id)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state letter


def _train_worker_pids() -> list[int]:
    """PIDs of this test's live Ray Train workers: processes titled ``ray::RayTrainWorker`` that descend from this
    process (its local Ray's raylet), never another session's."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if not command.startswith(b"ray::RayTrainWorker"):
            continue
        ancestor = int(entry.name)
        while ancestor > 1 and ancestor != os.getpid():
            ancestor = _parent(ancestor)
        if ancestor == os.getpid():
            pids.append(int(entry.name))
    return sorted(pids)


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint(prepared: Run) -> None:
    """SIGKILL one of 2 DDP workers mid-epoch 2 of 3: FailureConfig restarts the group from the epoch-1 checkpoint
    and the run finishes all 3 epochs, having lost only the steps of epoch 2 done before the kill."""
    train = TrainConfig(
        run_name="killed", num_workers=2, samples_per_epoch=512, batch_size=8, max_epochs=3, max_failures=1,
        bf16_autocast=False, loss=LossConfig(latent_weight=0.1),
    )  # fmt: skip
    name = "killed-worker"
    killed: dict[str, float] = {}
    finished = threading.Event()

    def kill_mid_epoch_two() -> None:
        first = Path(prepared.storage) / name
        while not finished.is_set():
            if (first / SNAPSHOT).is_file():  # the epoch-1 checkpoint is registered, not only uploaded
                checkpointed = time.monotonic()
                time.sleep(1.0)  # into epoch 2 (an epoch takes several seconds here)
                pids = _train_worker_pids()
                if pids:
                    os.kill(pids[-1], signal.SIGKILL)
                    killed.update(pid=pids[-1], seconds_after_checkpoint=time.monotonic() - checkpointed)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_mid_epoch_two, daemon=True)
    killer.start()
    started = time.monotonic()
    try:
        result = _fit(prepared, train, name)
    finally:
        finished.set()
        killer.join(timeout=30)
    assert killed, "the watcher found no Ray Train worker to kill"
    assert result.epochs == 3  # type: ignore[attr-defined]
    assert result.recoveries == 1  # type: ignore[attr-defined]
    assert completed_epochs(prepared.storage, name) == 3
    print(f"killed worker {killed['pid']} {killed['seconds_after_checkpoint']:.1f}s after the epoch-1 checkpoint; "
          f"run finished 3 epochs in {time.monotonic() - started:.1f}s")  # fmt: skip


@pytest.mark.slow
def test_a_worker_killed_past_max_failures_is_one_clear_error(prepared: Run) -> None:
    """With ``max_failures: 0`` the same kill ends the run with an error naming the run and the kept checkpoint."""
    train = TrainConfig(
        run_name="killed0", num_workers=2, samples_per_epoch=512, batch_size=8, max_epochs=3, max_failures=0,
        bf16_autocast=False,
    )  # fmt: skip
    name = "killed-no-retry"
    finished = threading.Event()

    def kill_after_first_checkpoint() -> None:
        while not finished.is_set():
            if (Path(prepared.storage) / name / SNAPSHOT).is_file():
                for pid in _train_worker_pids()[-1:]:
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    try:
        with pytest.raises(TrainingFailed) as failure:
            _fit(prepared, train, name)
    finally:
        finished.set()
        killer.join(timeout=30)
    message = str(failure.value)
    assert name in message and "train.max_failures" in message and "checkpoint (epoch 1) is kept" in message
    assert "worker " in message and "\n" not in message


@pytest.mark.slow
def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(prepared: Run) -> None:
    """Epoch 1 trains normally. The run is then resumed with an InfoNCE temperature so small that the logits
    overflow: the first step of epoch 2 is NaN. The run stops there, without retries, naming the step, and the
    epoch-1 checkpoint is still the run's latest."""
    base = TrainConfig(
        run_name="nan", num_workers=2, samples_per_epoch=128, batch_size=8, max_epochs=1, max_failures=2,
        bf16_autocast=False, loss=LossConfig(latent_loss="infonce", latent_warmup_steps=0),
    )  # fmt: skip
    name = "nan-after-epoch-1"
    _fit(prepared, base, name)
    before = sorted(p.name for p in (Path(prepared.storage) / name).glob("checkpoint_*"))
    diverging = replace(base, max_epochs=2, loss=replace(base.loss, infonce_temperature=1e-45))
    started = time.monotonic()
    with pytest.raises(TrainingFailed) as failure:
        _fit(prepared, diverging, name)
    steps_per_epoch = 128 // (8 * 2)
    message = str(failure.value)
    assert f"not finite at step {steps_per_epoch} " in message and "in epoch 2" in message
    assert "checkpoint (epoch 1) is kept" in message
    assert sorted(p.name for p in (Path(prepared.storage) / name).glob("checkpoint_*")) == before
    assert completed_epochs(prepared.storage, name) == 1
    assert time.monotonic() - started < 120  # stopped, not retried max_failures times into the same divergence


def test_train_step_refuses_a_nan_step_and_leaves_the_weights() -> None:
    module = TrainingModule(build_model(MODEL), LossConfig())
    optimizer, _ = build_optimizer(module, TrainConfig(), total_steps=10)
    blurred, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    train_step(module, optimizer, blurred, sharp, 0)
    weights = [p.detach().clone() for p in module.parameters()]
    blurred[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="not finite at step 7 "):
        train_step(module, optimizer, blurred, sharp, 7)
    assert all(torch.equal(a, b) for a, b in zip(weights, module.parameters(), strict=True))
