"""CPU inference speed of a trained BDIRNet in model GFLOP/s, beside the 3×3-conv ceiling measured in the same run;
and one 1024² image through eager fp32, eager bf16 (autocast), TorchScript and ONNX Runtime.

The ceiling: one ``Conv2d(C, C, 3)`` at each width of the network (``C * 2**level`` channels at ``1 / 2**level`` of the
image side, the shapes its residual blocks run), timed alone in the faster of the two memory layouts (NCHW,
channels_last). Every level of the network costs about the same FLOPs (channels double while pixels quarter), so the
ceiling is the harmonic mean of the per-level conv rates: the speed the model would reach if all its FLOPs ran like
its own 3×3 convs, with no overhead between them. On a shared machine the load drifts, so every round times the
ceiling and then each case once, and the ratio is taken within a round (the median over rounds is printed).

    python bench/inference_speed.py --weights models/bdirnet-s1.pt [--size 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bdirnet.export import export_onnx, export_torchscript, load_exported
from bdirnet.model import forward_flops
from bdirnet.weights import load_weights


def seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def ceiling_convs(width: int, levels: int, size: int) -> list[tuple[int, Callable[[], object]]]:
    """(FLOPs, call) of a lone 3×3 conv at every level's width and resolution, in its faster memory layout."""
    convs = []
    for level in range(levels + 1):
        channels, side = width * 2**level, size // 2**level
        flops = 2 * channels * channels * 9 * side * side
        candidates = []
        for layout in (torch.contiguous_format, torch.channels_last):
            conv = nn.Conv2d(channels, channels, 3, padding=1).eval().to(memory_format=layout)  # type: ignore[call-overload]
            features = torch.rand(1, channels, side, side).contiguous(memory_format=layout)
            call = functools.partial(conv, features)
            call()  # warm-up
            candidates.append((min(seconds(call) for _ in range(2)), call))
        convs.append((flops, min(candidates, key=lambda c: c[0])[1]))
    return convs


def ceiling_rate(convs: list[tuple[int, Callable[[], object]]]) -> tuple[list[float], float]:
    """GFLOP/s of each conv (timed once now) and their harmonic mean."""
    rates = [flops / seconds(call) / 1e9 for flops, call in convs]
    return rates, len(rates) / sum(1 / r for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a weights file, e.g. models/bdirnet-s1.pt")
    parser.add_argument("--size", type=int, default=1024, help="side of the square test image (px)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of ceiling + every case")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    network, _ = load_weights(args.weights)
    config = network.config
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    flops = forward_flops(network, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.weights}, {args.size}² image, "
          f"{flops / 1e9:.1f} GFLOP per forward")  # fmt: skip

    convs = ceiling_convs(config.width_channels, config.levels, args.size)

    with tempfile.TemporaryDirectory(prefix="bdirnet-bench-") as folder:
        started = time.perf_counter()
        export_onnx(network, Path(folder) / "m.onnx")
        onnx_export_s = time.perf_counter() - started
        started = time.perf_counter()
        export_torchscript(network, Path(folder) / "m.pt")
        torchscript_export_s = time.perf_counter() - started
        onnx, script = load_exported(Path(folder) / "m.onnx"), load_exported(Path(folder) / "m.pt")
        print(f"export: ONNX {onnx_export_s:.1f}s, TorchScript {torchscript_export_s:.1f}s")

        def bf16() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return network(image)

        channels_last = copy.deepcopy(network).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        cases: dict[str, Callable[[], object]] = {
            "eager fp32": lambda: network(image),
            "eager fp32 channels_last": lambda: channels_last(image.contiguous(memory_format=torch.channels_last)),
            "eager bf16 (autocast)": bf16,
            "TorchScript fp32": lambda: script(image),
            "ONNX Runtime fp32": lambda: onnx(image),
        }
        for run in cases.values():
            run()  # warm-up
        ceilings: list[float] = []
        took: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            rates, ceiling = ceiling_rate(convs)
            ceilings.append(ceiling)
            for name, run in cases.items():
                took[name].append(seconds(run))
        widths = ", ".join(f"{config.width_channels * 2**i}ch {r:.0f}" for i, r in enumerate(rates))
        print(f"3×3 conv ceiling: median {statistics.median(ceilings):.1f} GFLOP/s over {args.rounds} rounds "
              f"(last round: harmonic mean of {widths} GFLOP/s)")  # fmt: skip
        print(f"{'case':<26}{'seconds':>9}{'GFLOP/s':>9}{'of ceiling':>12}   (medians over rounds)")
        for name, times in took.items():
            ratios = [flops / t / 1e9 / c for t, c in zip(times, ceilings, strict=True)]
            seconds_median = statistics.median(times)
            print(f"{name:<26}{seconds_median:>9.3f}{flops / seconds_median / 1e9:>9.1f}"
                  f"{statistics.median(ratios):>11.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
