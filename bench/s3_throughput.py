"""S3 throughput against a local S3 server (moto_server on loopback), measured side by side in one run:

1. upload and download of a dataset folder (default 200 MB: 100 files of 2 MB) through ``bdirnet.storage``
   vs the aws CLI (``aws s3 sync``), as MB/s and ratios;
2. the pairs stage (Ray Data) writing its shards to a local folder vs to S3.

The aws CLI is taken from PATH, or installed into a throw-away venv under /tmp (it is not a project
dependency: it pins its own botocore).

Run: ``.venv/bin/python bench/s3_throughput.py [--files 100] [--file-mb 2]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from s3server import CREDENTIALS, moto_server

from bdirnet import storage
from bdirnet.config import DegradeConfig, IngestConfig, PairsConfig
from bdirnet.datasets import bundle_skimage_photos, ingest_folder, read_manifest
from bdirnet.pairs import write_pairs
from bdirnet.runtime import init_ray, shutdown_ray


def aws_cli() -> str:
    found = shutil.which("aws")
    if found:
        return found
    venv = Path("/tmp/bdirnet-awscli")
    if not (venv / "bin" / "aws").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "awscli"], check=True)
    return str(venv / "bin" / "aws")


def timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--file-mb", type=float, default=2.0)
    args = parser.parse_args()
    aws = aws_cli()
    work = Path(tempfile.mkdtemp(prefix="bdr-s3bench-"))
    os.environ.update(CREDENTIALS)
    try:
        folder = work / "dataset"
        folder.mkdir()
        size = int(args.file_mb * 1e6)
        for i in range(args.files):
            (folder / f"photo_{i:04d}.bin").write_bytes(os.urandom(size))
        megabytes = args.files * size / 1e6
        with moto_server() as endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            storage.ensure_bucket("bench")
            cli = [aws, "--endpoint-url", endpoint, "s3", "sync", "--only-show-errors"]
            ours_up = timed(lambda: storage.upload_folder(folder, "s3://bench/ours"))
            ours_down = timed(lambda: storage.download_folder("s3://bench/ours", work / "ours_down"))
            cli_up = timed(lambda: subprocess.run([*cli, str(folder), "s3://bench/cli"], check=True))
            cli_down = timed(lambda: subprocess.run([*cli, "s3://bench/cli", str(work / "cli_down")], check=True))
            skip = timed(lambda: storage.upload_folder(folder, "s3://bench/ours"))
            print(f"1. {args.files} files, {megabytes:.0f} MB, moto_server on loopback")
            print(f"   upload    bdirnet.storage {megabytes / ours_up:7.1f} MB/s   aws s3 sync "
                  f"{megabytes / cli_up:7.1f} MB/s   ratio {cli_up / ours_up:.2f}x")  # fmt: skip
            print(f"   download  bdirnet.storage {megabytes / ours_down:7.1f} MB/s   aws s3 sync "
                  f"{megabytes / cli_down:7.1f} MB/s   ratio {cli_down / ours_down:.2f}x")  # fmt: skip
            print(f"   re-upload of the unchanged folder (skipped by size + ETag): {skip:.2f}s")

            bundle_skimage_photos(work / "raw")
            ingest_folder(work / "raw", work / "ingested", IngestConfig(min_test_photos=0, min_val_photos=0))
            records = read_manifest(work / "ingested")
            pairs = PairsConfig(val_crop_px=128, test_crop_px=128, test_crops_per_image=4, min_texture=0.0)
            init_ray()
            try:
                rates = {}
                for name, target in (("local", str(work / "pairs")), ("S3", "s3://bench/pairs")):
                    start = time.perf_counter()
                    counts = write_pairs(records, work / "ingested", target, pairs, DegradeConfig())
                    rates[name] = sum(counts.values()) / (time.perf_counter() - start)
            finally:
                shutdown_ray()
            print(f"2. pairs stage: local {rates['local']:.1f} pairs/s, S3 {rates['S3']:.1f} pairs/s "
                  f"(S3/local {rates['S3'] / rates['local']:.2f}x)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
