"""`bdirnet deblur` on a 12-megapixel photo: peak memory and time, untiled vs automatic tiling, fp32 vs bf16; tiled vs
untiled on 512² photos (each tile's own SAID/SAIR statistics vs the whole image's); the largest step across tile
borders on a smooth gradient vs elsewhere.

Each large-photo case runs in its own process (peak RSS from ``getrusage``), side by side in one run:

    python bench/deblur_memory.py --weights models/bdirnet-s0.pt            # a trained run (any weights file)
    python bench/deblur_memory.py --weights models/bdirnet-s0.pt --skip-untiled   # skip the 5+ GB untiled case
    python bench/deblur_memory.py --weights models/bdirnet-s0.pt --skip-large --photos data/raw/photos  # 512² only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def large_photo(height: int, width: int) -> torch.Tensor:
    """A 12 MP photo-like image: scikit-image photos tiled and mirrored, in [0, 1]."""
    from skimage import data

    tiles = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rows = []
    for i in range(0, height, 300):
        row = [tiles[(i // 300 + j // 300) % 4][:300, :300] for j in range(0, width, 300)]
        rows.append(np.concatenate(row, axis=1)[:, :width])
    image = np.concatenate(rows, axis=0)[:height]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def one_case(
    weights: str, height: int, width: int, tiled: bool, bf16: bool, max_memory_gib: float, statistics: str
) -> dict[str, float]:
    """Runs in a child process: restore the large photo once and report time, tile and peak RSS."""
    from bdirnet.deblur import restore, tile_for_memory
    from bdirnet.weights import load_weights

    torch.set_grad_enabled(False)
    network, _ = load_weights(weights)
    image = large_photo(height, width)
    tile = tile_for_memory(network, height, width, int(max_memory_gib * 2**30)) if tiled else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    restore(network, image, tile=tile, overlap=32, bf16=bf16, statistics=statistics)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # steadier than wall on a shared CPU
    peak = after.ru_maxrss * 1024
    return {"seconds": seconds, "cpu_seconds": cpu, "tile": float(tile or 0), "peak_rss_gib": peak / 2**30}


def photo_crops(folder: str | None, count: int, side: int = 512) -> list[tuple[str, torch.Tensor]]:
    """Centre ``side``² crops of the first ``count`` photos of ``folder`` whose short side is at least ``side`` (else of
    scikit-image's astronaut, coffee and chelsea, upscaled where smaller), as ``(1, 3, side, side)`` in [0, 1]."""
    from pathlib import Path

    from bdirnet.deblur import PHOTO_SUFFIXES, read_photo

    crops = []
    if folder:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in PHOTO_SUFFIXES or len(crops) == count:
                continue
            try:
                image = read_photo(path).tensor()
            except ValueError:
                continue
            height, width = image.shape[-2:]
            if min(height, width) >= side:
                top, left = (height - side) // 2, (width - side) // 2
                crops.append((path.name, image[..., top : top + side, left : left + side].contiguous()))
        return crops
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea")[:count]:
        image = torch.from_numpy(np.ascontiguousarray(getattr(data, name)())).permute(2, 0, 1)[None].float() / 255
        scale = side / min(image.shape[-2:])
        if scale > 1:
            image = torch.nn.functional.interpolate(image, scale_factor=scale, mode="bicubic").clamp(0, 1)
        height, width = image.shape[-2:]
        top, left = (height - side) // 2, (width - side) // 2
        crops.append((name, image[..., top : top + side, left : left + side].contiguous()))
    return crops


def tiling_quality(weights: str, folder: str | None, count: int, tile: int) -> dict[str, float]:
    """Tiled vs untiled on 512² photo crops blurred by the zoo (gaussian): the PSNR gap against the sharp crop and
    the PSNR of the tiled restoration against the whole one, with each tile's own statistics and with the whole
    image's; and the seam check on a smooth gradient (whole-image statistics, the default)."""
    from bdirnet.deblur import restore
    from bdirnet.degrade import degrade
    from bdirnet.metrics import psnr
    from bdirnet.weights import load_weights

    torch.set_grad_enabled(False)
    network, _ = load_weights(weights)
    result: dict[str, float] = {}
    for statistics in ("tile", "image"):
        result |= {f"{statistics}_max_gap_db": 0.0, f"{statistics}_min_psnr_to_whole": float("inf"),
                   f"{statistics}_seconds": 0.0}  # fmt: skip
    result["whole_seconds"] = 0.0
    crops = photo_crops(folder, count)
    for index, (name, sharp) in enumerate(crops):
        blurred, _ = degrade(sharp, "gaussian", seed=index)
        started = time.perf_counter()
        whole = restore(network, blurred)
        result["whole_seconds"] += time.perf_counter() - started
        reference = float(psnr(whole, sharp)[0])
        line = f"  {name[:40]:<40} whole {reference:6.2f} dB"
        for statistics in ("tile", "image"):
            started = time.perf_counter()
            tiled = restore(network, blurred, tile=tile, overlap=32, statistics=statistics)
            result[f"{statistics}_seconds"] += time.perf_counter() - started
            gap = float(psnr(tiled, sharp)[0]) - reference
            to_whole = float(psnr(tiled, whole)[0])
            result[f"{statistics}_max_gap_db"] = max(result[f"{statistics}_max_gap_db"], abs(gap))
            result[f"{statistics}_min_psnr_to_whole"] = min(result[f"{statistics}_min_psnr_to_whole"], to_whole)
            line += f" | {statistics} statistics {gap:+.3f} dB, {to_whole:5.1f} dB to whole"
        print(line)
    result["photos"] = float(len(crops))
    ramp = torch.linspace(0.1, 0.9, 640)
    gradient = torch.stack([ramp[None].expand(320, 640), ramp.flip(0)[None].expand(320, 640),
                            0.5 * torch.ones(320, 640)])[None].contiguous()  # fmt: skip
    seam_tile, overlap = 192, 32
    restored = restore(network, gradient, tile=seam_tile, overlap=overlap)
    steps = (restored[..., 1:] - restored[..., :-1]).abs().amax(dim=(0, 1, 2))
    starts = [*range(0, 640 - seam_tile, seam_tile - overlap), 640 - seam_tile]
    borders = {s + k - 1 for s in starts[1:] for k in range(overlap + 1)} | {s + seam_tile - 1 for s in starts[:-1]}
    result["seam_step_at_borders"] = max(float(steps[b]) for b in borders if 0 <= b < 639)
    result["seam_step_elsewhere"] = max(float(steps[c]) for c in range(8, 631) if c not in borders)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a weights file, e.g. models/bdirnet-s0.pt")
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--max-memory", type=float, default=2.0, help="GiB budget of the automatic tiling")
    parser.add_argument("--skip-untiled", action="store_true")
    parser.add_argument("--skip-large", action="store_true", help="only the 512² tiled-vs-untiled and seam checks")
    parser.add_argument("--photos", default=None, help="a folder of photos for the 512² checks (default: scikit-image)")
    parser.add_argument("--count", type=int, default=8, help="photos of --photos to use")
    parser.add_argument("--tile", type=int, default=256, help="tile of the 512² checks (px)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        tiled, bf16, statistics = args.case.split(",")
        result = one_case(args.weights, args.height, args.width, tiled == "1", bf16 == "1", args.max_memory, statistics)
        print(json.dumps(result))
        return
    cases = [(True, False, "image"), (True, False, "tile"), (True, True, "image")]
    cases += [] if args.skip_untiled else [(False, False, "tile")]
    if not args.skip_large:
        print(f"{args.width}×{args.height} photo, weights {args.weights}, budget {args.max_memory} GiB")
        print(f"{'case':<36}{'tile':>6}{'seconds':>10}{'CPU s':>8}{'peak RSS GiB':>14}")
    for tiled, bf16, statistics in [] if args.skip_large else cases:
        size = ["--height", str(args.height), "--width", str(args.width), "--max-memory", str(args.max_memory)]
        case = f"{int(tiled)},{int(bf16)},{statistics}"
        command = [sys.executable, __file__, "--weights", args.weights, *size, "--case", case]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        label = f"{'tiled' if tiled else 'untiled'} {'bf16' if bf16 else 'fp32'}"
        label += f", {statistics} statistics" if tiled else ""
        seconds, cpu, peak = result["seconds"], result["cpu_seconds"], result["peak_rss_gib"]
        print(f"{label:<36}{int(result['tile']):>6}{seconds:>10.1f}{cpu:>8.1f}{peak:>14.2f}", flush=True)
    print(f"\ntiled ({args.tile} px, overlap 32) vs untiled on 512² photo crops, gaussian blur (PSNR to the sharp):")
    quality = tiling_quality(args.weights, args.photos, args.count, args.tile)
    for statistics in ("tile", "image") if quality["photos"] else ():
        print(f"{statistics} statistics: at most {quality[f'{statistics}_max_gap_db']:.3f} dB from untiled, at least "
              f"{quality[f'{statistics}_min_psnr_to_whole']:.1f} dB to the untiled output, "
              f"{quality[f'{statistics}_seconds']:.1f}s (untiled {quality['whole_seconds']:.1f}s) "
              f"for {int(quality['photos'])} photos")  # fmt: skip
    print(f"smooth gradient (whole-image statistics), largest step: at tile borders "
          f"{quality['seam_step_at_borders']:.4f}, elsewhere {quality['seam_step_elsewhere']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
