"""The ``bdirnet`` command: ``bdirnet table reports/eval.json`` prints the per-family table of an evaluation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bdirnet.evaluation import format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bdirnet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="print the per-family table of reports/eval.json")
    table.add_argument("report", type=Path, nargs="?", default=Path("reports/eval.json"))
    args = parser.parse_args(argv)
    if args.command == "table":
        try:
            report = json.loads(args.report.read_text())
        except (OSError, json.JSONDecodeError) as error:
            print(f"error: {args.report}: cannot read the evaluation report ({error})", file=sys.stderr)
            return 2
        model = report["model"]
        print(format_table(report["families"], f"{model['name']} v{model['version']} (PSNR dB, SSIM)"))
        print(report.get("decision", ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
