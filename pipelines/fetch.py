"""Stage `fetch`: download the pinned packages of data/sources.yaml (or reuse the cache), keep their real photos
by rule, and write them with SOURCES.json and REJECTED.txt to one folder (e.g. data/raw/photos/)."""

from __future__ import annotations

from pathlib import Path

from _common import parser, stage_main

from bdirnet.sources import fetch_photos, load_manifest


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--manifest", type=Path, required=True, help="sources manifest, e.g. data/sources.yaml")
    args.add_argument("--cache", type=Path, required=True, help="download cache, e.g. .cache/packages")
    args.add_argument("--out", type=Path, required=True, help="photo folder, e.g. data/raw/photos")
    ns = args.parse_args()
    report = fetch_photos(load_manifest(ns.manifest), ns.cache, ns.out)
    for package in report.packages:
        print(
            f"fetch: {package.source.name} {package.source.version}: {len(package.photos)} photos kept, "
            f"{len(package.rejected)} rejected"
        )
    photos = report.photos
    megabytes = sum(len(photo.data) for photo in photos) / 1e6
    rejected = sum(len(package.rejected) for package in report.packages)
    print(
        f"fetch: {len(photos)} photos ({megabytes:.1f} MB) from {len(report.packages)} packages, "
        f"{rejected} rejected -> {ns.out} (reasons in REJECTED.txt)"
    )


if __name__ == "__main__":
    main()
