"""Stage `bundle`: copy the natural photos that scikit-image installs into data/raw/skimage/, and its real
motion-blurred photo (clock_motion.png, no ground truth) into data/raw/real_blur/."""

from __future__ import annotations

from pathlib import Path

from _common import parser, stage_main

from bdirnet.datasets import bundle_real_blur_photos, bundle_skimage_photos


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="destination folder, e.g. data/raw/skimage")
    args.add_argument("--real-blur-out", type=Path, required=True, help="e.g. data/raw/real_blur")
    ns = args.parse_args()
    copied = bundle_skimage_photos(ns.out)
    real = bundle_real_blur_photos(ns.real_blur_out)
    print(f"bundle: {len(copied)} photos -> {ns.out}, {len(real)} real blurred -> {ns.real_blur_out}")


if __name__ == "__main__":
    main()
