"""Stage `ingest`: validate and decode every file of data/raw/<dataset>/, quarantine bad ones, split."""

from __future__ import annotations

from pathlib import Path

from _common import parser, stage_main

from bdirnet.config import load_params
from bdirnet.datasets import ingest_folder


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--raw-root", type=Path, default=Path("data/raw"), help="folder of raw datasets")
    args.add_argument("--out", type=Path, required=True, help="ingested dataset folder, e.g. data/ingested")
    ns = args.parse_args()
    config = load_params("ingest", ns.params)
    report = ingest_folder(ns.raw_root / config.dataset, ns.out, config)
    print(f"ingest: {len(report.images)} images {report.counts()}, {len(report.quarantined)} quarantined")
    for name, reason in sorted(report.quarantined.items()):
        print(f"  quarantined {name}: {reason}")


if __name__ == "__main__":
    main()
