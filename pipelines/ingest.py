"""Stage `ingest`: validate and decode every file of data/raw/<dataset>/, quarantine bad ones, split.

A paired folder (GoPro, HIDE, RealBlur, Köhler, or blur/ + sharp/: bdirnet/paired.py) is ingested as pairs: each
pair validated, bad pairs quarantined, the dataset's own splits kept.

Every paired dataset under ``--paired-root`` (``data/raw/paired/<name>/``) is ingested too, beside the photos, into
``<out>/paired/<name>/`` with a val split carved from its train part by scene (``ingest.val_percent``): the pairs
stage mixes their train pairs into training (``train.paired_share``) and the evaluate stage scores every run on
their test pairs."""

from __future__ import annotations

from pathlib import Path

from _common import parser, stage_main

from bdirnet.config import load_params
from bdirnet.datasets import ingest_folder
from bdirnet.paired import ingest_paired_root, ingest_pairs, looks_paired


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="folder of raw datasets")
    args.add_argument("--paired-root", type=Path, help="folder of paired datasets, e.g. data/raw/paired (optional)")
    args.add_argument("--out", type=Path, required=True, help="ingested dataset folder, e.g. data/ingested")
    ns = args.parse_args()
    config = load_params("ingest", ns.params)
    raw_dir = ns.raw_root / config.dataset
    if raw_dir.is_dir() and looks_paired(raw_dir):
        paired = ingest_pairs(raw_dir, ns.out, config)
        quarantined = paired.quarantined
        pairs = f"{len(paired.pairs)} pairs {paired.counts()}"
        print(f"ingest: {paired.layout} layout, {pairs}, {len(quarantined)} quarantined")
    else:
        report = ingest_folder(raw_dir, ns.out, config)
        print(f"ingest: {len(report.images)} images {report.counts()}, {len(report.quarantined)} quarantined")
        quarantined = report.quarantined
    for name, reason in sorted(quarantined.items()):
        print(f"  quarantined {name}: {reason}")
    if ns.paired_root is not None:
        for folder, paired_report in ingest_paired_root(ns.paired_root, ns.out / "paired", config).items():
            where, count = f"{ns.paired_root / folder} ({paired_report.layout} layout)", len(paired_report.pairs)
            print(f"ingest: paired {where}: {count} pairs {paired_report.counts()}, "
                  f"{len(paired_report.quarantined)} quarantined")  # fmt: skip
            for name, reason in sorted(paired_report.quarantined.items()):
                print(f"  quarantined {folder}/{name}: {reason}")


if __name__ == "__main__":
    main()
