"""Stage `pairs`: Ray Data crops the ingested images and blurs them with the zoo into Parquet shards; the val pairs of
the paired datasets ingested under ``<ingested>/paired/`` join the val shards as real pairs (bdirnet/pairs.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from _common import parser, stage_main

from bdirnet.config import load_params
from bdirnet.datasets import read_manifest
from bdirnet.paired import read_paired_datasets
from bdirnet.pairs import PAIRED_FOLDER, write_pairs
from bdirnet.runtime import init_ray, shutdown_ray, stage_location


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--ingested", type=Path, required=True, help="ingested dataset folder (manifest.json)")
    args.add_argument("--out", type=Path, required=True, help="local pairs folder (default storage)")
    ns = args.parse_args()
    pairs, degrade = load_params("pairs", ns.params), load_params("degrade", ns.params)
    out_root = stage_location(ns.out, "pairs")
    start = time.perf_counter()
    init_ray()
    try:
        paired = read_paired_datasets(ns.ingested / PAIRED_FOLDER)
        counts = write_pairs(read_manifest(ns.ingested), ns.ingested, out_root, pairs, degrade, paired)
        if out_root != str(ns.out.resolve()):  # shards on shared storage: leave a pointer for DVC and later stages
            ns.out.mkdir(parents=True, exist_ok=True)
            (ns.out / "remote.json").write_text(json.dumps({"uri": out_root, "counts": counts}, indent=2) + "\n")
    finally:
        shutdown_ray()  # last: under `ray job submit`, disconnecting releases the job's working dir
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    print(f"pairs: {counts} -> {out_root} in {seconds:.1f}s ({total / seconds:.1f} pairs/s)")


if __name__ == "__main__":
    main()
