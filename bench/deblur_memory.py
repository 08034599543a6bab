"""`bdirnet deblur` on a 12-megapixel photo: peak memory and time, untiled vs automatic tiling, fp32 vs bf16; tiled vs
untiled PSNR on 512² photos; the largest step across tile borders on a smooth gradient vs elsewhere.

Each large-photo case runs in its own process (peak RSS from ``getrusage``), side by side in one run:

    python bench/deblur_memory.py --weights models/bdirnet-s0.pt            # a trained run (any weights file)
    python bench/deblur_memory.py --weights models/bdirnet-s0.pt --skip-untiled   # skip the 5+ GB untiled case
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


def one_case(weights: str, height: int, width: int, tiled: bool, bf16: bool, max_memory_gib: float) -> dict[str, float]:
    """Runs in a child process: restore the large photo once and report time, tile and peak RSS."""
    from bdirnet.deblur import restore, tile_for_memory
    from bdirnet.weights import load_weights

    torch.set_grad_enabled(False)
    network, _ = load_weights(weights)
    image = large_photo(height, width)
    tile = tile_for_memory(network, height, width, int(max_memory_gib * 2**30)) if tiled else None
    started = time.perf_counter()
    restore(network, image, tile=tile, overlap=32, bf16=bf16)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "tile": float(tile or 0), "peak_rss_gib": peak / 2**30}


def tiling_quality(weights: str) -> dict[str, float]:
    """Tiled vs untiled PSNR (against the photo) on 512² photos, and the seam check on a smooth gradient."""
    from skimage import data

    from bdirnet.deblur import restore
    from bdirnet.metrics import psnr
    from bdirnet.weights import load_weights

    network, _ = load_weights(weights)
    gaps = []
    for name in ("astronaut", "coffee", "chelsea"):
        photo = getattr(data, name)()[:512, :512]
        image = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1)[None].float() / 255
        whole, tiled = restore(network, image), restore(network, image, tile=256, overlap=32)
        gaps.append(abs(float(psnr(tiled, image)[0]) - float(psnr(whole, image)[0])))
    ramp = torch.linspace(0.1, 0.9, 640)
    gradient = torch.stack([ramp[None].expand(320, 640), ramp.flip(0)[None].expand(320, 640),
                            0.5 * torch.ones(320, 640)])[None].contiguous()  # fmt: skip
    tile, overlap = 192, 32
    restored = restore(network, gradient, tile=tile, overlap=overlap)
    steps = (restored[..., 1:] - restored[..., :-1]).abs().amax(dim=(0, 1, 2))
    starts = [*range(0, 640 - tile, tile - overlap), 640 - tile]
    borders = {s + k - 1 for s in starts[1:] for k in range(overlap + 1)} | {s + tile - 1 for s in starts[:-1]}
    at_borders = max(float(steps[b]) for b in borders if 0 <= b < 639)
    elsewhere = max(float(steps[c]) for c in range(8, 631) if c not in borders)
    return {"max_tiled_vs_untiled_db": max(gaps), "seam_step_at_borders": at_borders, "seam_step_elsewhere": elsewhere}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a weights file, e.g. models/bdirnet-s0.pt")
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--max-memory", type=float, default=2.0, help="GiB budget of the automatic tiling")
    parser.add_argument("--skip-untiled", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        tiled, bf16 = (part == "1" for part in args.case.split(","))
        print(json.dumps(one_case(args.weights, args.height, args.width, tiled, bf16, args.max_memory)))
        return
    cases = [(True, False), (True, True)] + ([] if args.skip_untiled else [(False, False)])
    print(f"{args.width}×{args.height} photo, weights {args.weights}, budget {args.max_memory} GiB")
    print(f"{'case':<22}{'tile':>6}{'seconds':>10}{'peak RSS GiB':>14}")
    for tiled, bf16 in cases:
        size = ["--height", str(args.height), "--width", str(args.width), "--max-memory", str(args.max_memory)]
        command = [sys.executable, __file__, "--weights", args.weights, *size, "--case", f"{int(tiled)},{int(bf16)}"]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        label = f"{'tiled' if tiled else 'untiled'} {'bf16' if bf16 else 'fp32'}"
        print(f"{label:<22}{int(result['tile']):>6}{result['seconds']:>10.1f}{result['peak_rss_gib']:>14.2f}")
    quality = tiling_quality(args.weights)
    print(f"tiled (256 px) vs untiled on 512² photos: at most {quality['max_tiled_vs_untiled_db']:.3f} dB apart")
    print(f"smooth gradient, largest step: at tile borders {quality['seam_step_at_borders']:.4f}, "
          f"elsewhere {quality['seam_step_elsewhere']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
