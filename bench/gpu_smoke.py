"""GPU smoke benchmark without Ray: the blur zoo and BDIRNet training steps on CPU vs CUDA, side by side.

Needs only torch, kornia and numpy (and this package on PYTHONPATH). Prints pairs/s per blur family (``degrade``:
kernels built batched on the device, blur, noise; and the blur step alone, the old per-sample CPU kernels vs the
batched ones, from ``bench/blur_zoo.py``), training steps/s (full BDIRNet objective, bf16 autocast), and the
CUDA/CPU ratios. Without CUDA it prints the CPU numbers only.

Run: ``PYTHONPATH=. python bench/gpu_smoke.py [--size 256] [--batch 16] [--steps 20] [--width 32]``
"""

from __future__ import annotations

import argparse
import time

import torch
from blur_zoo import old_blur  # bench/ is on sys.path when this file runs as a script

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import LossConfig, TrainConfig
from bdirnet.degrade import FAMILIES, apply_blur, degrade, sample_params
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import TrainingModule


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pairs_per_second(device: torch.device, family: str, size: int, batch: int, repeats: int) -> float:
    sharp = torch.rand(batch, 3, size, size, device=device)
    degrade(sharp, family, seed=0)  # warm-up (kernels, cuDNN autotune)
    synchronize(device)
    start = time.perf_counter()
    for seed in range(repeats):
        degrade(sharp, family, seed=seed)
    synchronize(device)
    return batch * repeats / (time.perf_counter() - start)


def blur_pairs_per_second(device: torch.device, family: str, size: int, batch: int, repeats: int) -> list[float]:
    """The blur step alone, pairs/s: [old per-sample CPU kernels, batched kernels on ``device``]."""
    sharp = torch.rand(batch, 3, size, size, device=device)
    batches = [sample_params(family, batch, seed) for seed in range(repeats)]
    out = []
    for blur in (old_blur, apply_blur):
        blur(sharp, batches[0])
        synchronize(device)
        start = time.perf_counter()
        for params in batches:
            blur(sharp, params)
        synchronize(device)
        out.append(batch * repeats / (time.perf_counter() - start))
    return out


def steps_per_second(device: torch.device, width: int, size: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    module = TrainingModule(BDIRNet(ModelConfig(width_channels=width)), LossConfig())
    module = module.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer, _ = build_optimizer(module, TrainConfig(), total_steps=steps + 3)
    sharp = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    blurred, _ = degrade(sharp, "motion", seed=0)
    for step in range(3):
        train_step(module, optimizer, blurred, sharp, step, bf16=True)
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        train_step(module, optimizer, blurred, sharp, step + 3, bf16=True)
    synchronize(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print(f"no CUDA; CPU only (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(f"\nblur zoo, pairs/s, batch {args.batch} of {args.size}²")
    for family in FAMILIES:
        rates = [pairs_per_second(d, family, args.size, args.batch, args.repeats) for d in devices]
        ratio = f"  CUDA/CPU {rates[1] / rates[0]:7.1f}x" if len(rates) > 1 else ""
        print(f"  {family:<11} " + "  ".join(f"{d.type} {r:9.1f}" for d, r in zip(devices, rates, strict=True)) + ratio)
    print("\nblur step alone, pairs/s: old per-sample CPU kernels vs batched kernels on the device")
    for family in FAMILIES:
        cells = []
        for device in devices:
            old, new = blur_pairs_per_second(device, family, args.size, args.batch, args.repeats)
            cells.append(f"{device.type} old {old:8.1f} new {new:8.1f} ({new / old:4.1f}x)")
        print(f"  {family:<11} " + "   ".join(cells))
    print(f"\nBDIRNet training (full objective, bf16), width {args.width}, batch {args.batch // 2} of {args.size}²")
    rates = []
    for device in devices:
        steps = args.cpu_steps if device.type == "cpu" else args.steps
        rates.append(steps_per_second(device, args.width, args.size, args.batch // 2, steps))
    line = "  ".join(f"{d.type} {r:7.2f} steps/s" for d, r in zip(devices, rates, strict=True))
    ratio = f"  CUDA/CPU {rates[1] / rates[0]:.1f}x" if len(rates) > 1 else ""
    print("  " + line + ratio)


if __name__ == "__main__":
    main()
