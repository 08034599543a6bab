"""Model cost: parameters, forward FLOPs, forward time at 256×256 (fp32 vs bf16 autocast), and training
throughput (fp32 vs bf16 vs bf16 + channels_last) of BDIRNet and the transfer baseline, side by side.

Run: ``.venv/bin/python bench/model_cost.py [--width 16] [--size 256] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import time

import torch

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import LossConfig, TrainConfig
from bdirnet.engine import autocast_context, build_optimizer, train_step
from bdirnet.losses import TrainingModule
from bdirnet.model import count_parameters, forward_flops


def time_forward(model: BDIRNet, image: torch.Tensor, bf16: bool, repeats: int) -> float:
    with torch.no_grad(), autocast_context(image.device, bf16):
        model(image)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(image)
    return (time.perf_counter() - start) / repeats


def train_samples_per_second(
    model_config: ModelConfig, loss: LossConfig, bf16: bool, channels_last: bool, patch: int, steps: int
) -> float:
    torch.manual_seed(0)
    module = TrainingModule(BDIRNet(model_config), loss)
    config = TrainConfig(batch_size=8, loss=loss)
    optimizer, _ = build_optimizer(module, config, total_steps=steps + 2)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)  # type: ignore[call-overload]
    sharp = torch.rand(8, 3, patch, patch).contiguous(memory_format=memory_format)
    blurred = (sharp * 0.9).contiguous(memory_format=memory_format)
    for step in range(2):
        train_step(module, optimizer, blurred, sharp, step, bf16=bf16)
    start = time.perf_counter()
    for step in range(steps):
        train_step(module, optimizer, blurred, sharp, step + 2, bf16=bf16)
    return 8 * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    full = ModelConfig(width_channels=args.width)
    variants = {"bdirnet": full, "transfer": ModelConfig.transfer_baseline(full)}
    image = torch.rand(1, 3, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.size}×{args.size}")
    print(f"{'variant':<10} {'params':>10} {'GFLOP':>8} {'fp32 ms':>9} {'bf16 ms':>9} {'bf16 speed-up':>14}")
    for name, config in variants.items():
        model = BDIRNet(config).eval()
        fp32 = time_forward(model, image, False, args.repeats)
        bf16 = time_forward(model, image, True, args.repeats)
        flops = forward_flops(model, args.size, args.size) / 1e9
        print(f"{name:<10} {count_parameters(model):>10,} {flops:>8.2f} {fp32 * 1e3:>9.1f} {bf16 * 1e3:>9.1f} "
              f"{fp32 / bf16:>13.2f}x")  # fmt: skip

    print(f"\ntraining samples/s, batch 8, {args.patch}² patches ({args.train_steps} steps each)")
    objectives = {
        "bdirnet (full objective)": (full, LossConfig()),
        "transfer (restore only)": (variants["transfer"], LossConfig(autoencode_weight=0.0, latent_weight=0.0)),
    }
    for name, (config, loss) in objectives.items():
        fp32 = train_samples_per_second(config, loss, False, False, args.patch, args.train_steps)
        bf16 = train_samples_per_second(config, loss, True, False, args.patch, args.train_steps)
        bf16_cl = train_samples_per_second(config, loss, True, True, args.patch, args.train_steps)
        print(f"{name:<26} fp32 {fp32:6.1f}  bf16 {bf16:6.1f} ({bf16 / fp32:.2f}x)  "
              f"bf16+channels_last {bf16_cl:6.1f} ({bf16_cl / fp32:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
