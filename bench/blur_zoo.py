"""Blur zoo throughput: the old per-sample kernel synthesis vs the batched one, side by side in one run.

For each family (and a mixed batch cycling through the five blur families) it measures pairs/s for

- *kernels*: kernel synthesis alone (for ``nonuniform`` also the two weight maps), and
- *kernels+blur*: synthesis plus the batched ``kornia.filters.filter2d`` (no noise, JPEG or clipping),

once with the per-sample path that the zoo used before (``kernel_from_params`` one record at a time on the CPU,
numpy/kornia, stacked and moved to the device; one mask per ``nonuniform`` record) and once with the batched
path (:func:`bdirnet.degrade.batch_kernels` / :func:`bdirnet.degrade.apply_blur`, built on the batch's device).
Both blur paths are checked to give the same float32 output first. Not a test.

Run: ``PYTHONPATH=. python bench/blur_zoo.py [--batch 16] [--size 256] [--repeats 20] [--rounds 3] [--threads N]
[--device cpu|cuda]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bdirnet.degrade import (
    FAMILIES,
    Params,
    apply_blur,
    batch_kernels,
    blur_components,
    blur_family,
    blur_with_kernels,
    kernel_from_params,
    sample_params,
    smooth_mask,
    smooth_masks,
)

BLURS = tuple(family for family in FAMILIES if family != "none")


# --------------------------------------------------------------------------------------------- the old path
def old_kernels(params: Sequence[Params], height: int, width: int, device: torch.device) -> list[object]:
    """Per record, on the CPU: its kernel, or its component kernels and its mask (moved to ``device``)."""
    out: list[object] = []
    for record in params:
        if blur_family(record["family"]).uniform:
            out.append(kernel_from_params(record).to(device))
        else:
            mask = smooth_mask(int(record["mask_cells"]), int(record["mask_seed"]), height, width, device)
            out.append(
                (
                    kernel_from_params(record["kernel_a"]).to(device),
                    kernel_from_params(record["kernel_b"]).to(device),
                    mask,
                )
            )
    return out


def stack_kernels(kernels: Sequence[torch.Tensor], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Zero-pad odd square kernels to a common size and stack them: ``(N, k, k)`` (the old path's stacking)."""
    size = max(k.shape[-1] for k in kernels)
    padded = []
    for kernel in kernels:
        margin = (size - kernel.shape[-1]) // 2
        padded.append(F.pad(kernel, (margin, margin, margin, margin)))
    return torch.stack(padded).to(device=device, dtype=dtype)


def old_blur(sharp: torch.Tensor, params: Sequence[Params]) -> torch.Tensor:
    """The blur step of apply_degradation before the batched kernels (per-record kernels, stacked)."""
    blurred = torch.empty_like(sharp)
    height, width = sharp.shape[-2:]
    components = [blur_components(p, height, width, sharp.device) for p in params]
    for count in sorted({len(c) for c in components}):
        members = [i for i, c in enumerate(components) if len(c) == count]
        subset = sharp[members]
        total: torch.Tensor | None = None
        for k in range(count):
            kernels = [kernel_from_params(components[i][k][0]) for i in members]
            part = blur_with_kernels(subset, stack_kernels(kernels, sharp.device, sharp.dtype))
            weights = [components[i][k][1] for i in members]
            if weights[0] is not None:
                part = torch.cat([w for w in weights if w is not None]).to(sharp.dtype) * part
            total = part if total is None else total + part
        assert total is not None
        blurred[members] = total
    return blurred


# --------------------------------------------------------------------------------------------- the new path
def new_kernels(params: Sequence[Params], height: int, width: int, device: torch.device) -> list[torch.Tensor]:
    uniform = [p for p in params if blur_family(p["family"]).uniform]
    mixed = [p for p in params if not blur_family(p["family"]).uniform]
    out = [batch_kernels(uniform, device=device, dtype=torch.float32)] if uniform else []
    if mixed:
        out.append(smooth_masks(mixed, height, width, device))
        out += [
            batch_kernels([p[key] for p in mixed], device=device, dtype=torch.float32)
            for key in ("kernel_a", "kernel_b")
        ]
    return out


# --------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rates(
    steps: Sequence[Callable[[list[Params]], object]], batches: list[list[Params]], device: torch.device, rounds: int
) -> list[float]:
    """Pairs per second of each of ``steps`` over ``batches``: the best of ``rounds`` rounds, the steps interleaved
    round by round (so a busy machine slows them alike), after one warm-up batch each."""
    best = [0.0] * len(steps)
    for step in steps:
        step(batches[0])
    for _ in range(rounds):
        for k, step in enumerate(steps):
            synchronize(device)
            start = time.perf_counter()
            for params in batches:
                step(params)
            synchronize(device)
            best[k] = max(best[k], sum(len(b) for b in batches) / (time.perf_counter() - start))
    return best


def records(family: str, batch: int, seed: int) -> list[Params]:
    if family == "mixed":
        return [sample_params(BLURS[i % len(BLURS)], batch, seed)[i] for i in range(batch)]
    return sample_params(family, batch, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20, help="batches per measurement (different seeds)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the best is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"blur zoo, pairs/s, batch {args.batch} of {args.size}², {name}, torch {torch.__version__}")
    sharp = torch.rand(args.batch, 3, args.size, args.size, device=device)
    height = width = args.size
    print(
        f"{'family':<11} {'kernels old':>12} {'new':>10} {'new/old':>8}   {'+blur old':>10} {'new':>10} {'new/old':>8}"
    )
    for family in (*FAMILIES, "mixed"):
        batches = [records(family, args.batch, seed) for seed in range(args.repeats)]
        if not torch.equal(old_blur(sharp, batches[0]), apply_blur(sharp, batches[0])):
            print(f"  {family}: the two paths differ (float32 blur output); timing anyway")
        synth = rates(
            [lambda p: old_kernels(p, height, width, device), lambda p: new_kernels(p, height, width, device)],
            batches,
            device,
            args.rounds,
        )
        blur = rates([lambda p: old_blur(sharp, p), lambda p: apply_blur(sharp, p)], batches, device, args.rounds)
        print(
            f"{family:<11} {synth[0]:>12.0f} {synth[1]:>10.0f} {synth[1] / synth[0]:>7.1f}x"
            f"   {blur[0]:>10.0f} {blur[1]:>10.0f} {blur[1] / blur[0]:>7.1f}x"
        )


if __name__ == "__main__":
    main()
