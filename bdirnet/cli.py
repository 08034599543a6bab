"""The ``bdirnet`` command.

- ``bdirnet table [reports/robustness.json]``: the study's variant × family PSNR matrix (or, given one run's
  ``eval.json``, its per-family table).
- ``bdirnet data push FOLDER s3://...`` / ``bdirnet data pull s3://... FOLDER``: move a raw dataset folder to and
  from S3 (boto3; ``AWS_ENDPOINT_URL`` for S3-compatible servers), skipping unchanged files.
- ``bdirnet set-params params.quick.yaml``: the file's overrides as ``dvc exp run`` arguments, one per line
  (``-S``, ``train.max_epochs=1``, ...); ``scripts/study.sh --quick`` uses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bdirnet.evaluation import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bdirnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="print the PSNR matrix of reports/robustness.json (or an eval.json)")
    table.add_argument("report", type=Path, nargs="?", default=Path("reports/robustness.json"))
    data = commands.add_parser("data", help="move a raw dataset folder to or from S3 (for users without DVC)")
    direction = data.add_subparsers(dest="direction", required=True)
    push = direction.add_parser("push", help="upload a folder: bdirnet data push data/raw/mine s3://bucket/raw/mine")
    push.add_argument("folder", type=Path)
    push.add_argument("uri")
    pull = direction.add_parser("pull", help="download a folder: bdirnet data pull s3://bucket/raw/mine data/raw/mine")
    pull.add_argument("uri")
    pull.add_argument("folder", type=Path)
    set_params = commands.add_parser("set-params", help="print a YAML overrides file as dvc exp run -S arguments")
    set_params.add_argument("overrides", type=Path)
    args = parser.parse_args(argv)
    if args.command == "set-params":
        from bdirnet.config import ConfigError, set_param_arguments

        try:
            print("\n".join(set_param_arguments(args.overrides)))
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.command == "data":
        from bdirnet import storage

        try:
            if args.direction == "push":
                report = storage.upload_folder(args.folder, args.uri)
            else:
                report = storage.download_folder(args.uri, args.folder)
        except (storage.StorageError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"{args.direction}: {report.transferred} files ({report.bytes / 1e6:.1f} MB) moved, "
              f"{report.skipped} unchanged")  # fmt: skip
        return 0
    if args.command == "table":
        try:
            report = json.loads(args.report.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"error: {args.report}: cannot read the report ({error})", file=sys.stderr)
            return 2
        if "variants" in report:
            from bdirnet.robustness import format_matrix

            print(format_matrix(report))
            print(report.get("promotion", {}).get("decision", ""))
        elif "families" in report:
            model = report["model"]
            print(format_table(report["families"], f"{model['name']} v{model['version']} (PSNR dB, SSIM)"))
        else:
            print(f"error: {args.report}: neither a robustness nor an eval report", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
