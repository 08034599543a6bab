"""Stage `bundle`: copy the natural photos that scikit-image installs into data/raw/skimage/."""

from __future__ import annotations

from pathlib import Path

from _common import parser, stage_main

from bdirnet.datasets import bundle_skimage_photos


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--out", type=Path, required=True, help="destination folder, e.g. data/raw/skimage")
    ns = args.parse_args()
    copied = bundle_skimage_photos(ns.out)
    print(f"bundle: {len(copied)} photos -> {ns.out}")


if __name__ == "__main__":
    main()
