"""DDP over the one training module: two real gloo processes on different data stay in lockstep, the objective's
heads included (DDP synchronises every trainable parameter itself; no hand-written all-reduce)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import LossConfig, TrainConfig
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import TrainingModule


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)  # same initial weights on both ranks, as Ray Train seeds them
        config = TrainConfig(loss=LossConfig(latent_warmup_steps=0, latent_weight=1.0))
        module = TrainingModule(BDIRNet(ModelConfig(width_channels=8, levels=2)), config.loss)
        optimizer, _ = build_optimizer(module, config, total_steps=3)
        wrapped = torch.nn.parallel.DistributedDataParallel(module)
        data = torch.Generator().manual_seed(100 + rank)  # different batches per rank
        for step in range(3):
            sharp = torch.rand(2, 3, 16, 16, generator=data)
            train_step(wrapped, optimizer, sharp.roll(1, dims=-1), sharp, step)
        torch.save({name: p.detach() for name, p in module.named_parameters()}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_keeps_network_and_heads_in_lockstep(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    heads = [name for name in first if name.startswith("objective.predictors.")]
    assert heads, "the objective has trainable heads"
    for name, value in first.items():
        assert torch.allclose(value, second[name], atol=1e-6), f"{name} differs between ranks"
    start = TrainingModule(BDIRNet(ModelConfig(width_channels=8, levels=2)), LossConfig())
    moved = [n for n, p in start.named_parameters() if n in heads and not torch.equal(p.detach(), first[n])]
    assert moved, "the heads were trained"
