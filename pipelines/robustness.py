"""Stage `robustness`: gather every study run and the classical references into the robustness report, draw the
picture grids, and move the ``champion`` alias when the promotion gate passes.

Writes ``reports/robustness.json`` (DVC metrics), ``reports/robustness.md``, ``reports/robustness.csv`` (DVC
plots) and ``reports/robustness/`` (``<family>.png`` grids: blurred | picture variants | sharp, and
``real_<name>.png`` for the real blurred photos), and logs them all to an MLflow run tagged ``kind=robustness``.

The champion candidate is the seed of ``study.promote_variant`` with the best validation PSNR (never chosen on
the test split); the gate compares its test group means with the current champion's.
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import parser, stage_main

from bdirnet import registry
from bdirnet.config import load_params
from bdirnet.promotion import promote
from bdirnet.robustness import (
    build,
    check_same_pictures,
    draw_pictures,
    load_run_reports,
    render_markdown,
    write_plots_csv,
)
from bdirnet.runtime import stage_location


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--runs", type=Path, required=True, help="reports/runs (one folder per variant and seed)")
    args.add_argument("--classical", type=Path, required=True, help="reports/classical.json")
    args.add_argument("--classical-images", type=Path, required=True, help="reports/classical/")
    args.add_argument("--pairs", type=Path, required=True, help="local pairs folder (to score an outside champion)")
    args.add_argument("--report", type=Path, required=True, help="reports/robustness.json")
    args.add_argument("--markdown", type=Path, required=True, help="reports/robustness.md")
    args.add_argument("--plots", type=Path, required=True, help="reports/robustness.csv")
    args.add_argument("--images", type=Path, required=True, help="reports/robustness/")
    ns = args.parse_args()
    study, gate = load_params("study", ns.params), load_params("promotion", ns.params)
    degrade = load_params("degrade", ns.params)
    runs = load_run_reports(ns.runs, study)
    try:
        classical = json.loads(ns.classical.read_text())["methods"]
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{ns.classical}: not a classical report ({error!r})") from None
    report = build(runs, classical, study, degrade.held_out_families)

    uri = registry.tracking_uri()
    test_pairs = f"{stage_location(ns.pairs, 'pairs')}/test"
    promotion = promote(uri, runs, study, gate, test_pairs, degrade.held_out_families)
    check_same_pictures(runs, classical, str(ns.classical))
    families = list(report["variants"]["blurred"]["families"])
    promotion["real_grids"] = draw_pictures(ns.runs, ns.classical_images, ns.images, study, families)

    report["promotion"] = promotion
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    ns.markdown.write_text(render_markdown(report, "Robustness study: BDIRNet vs the transfer networks"))
    write_plots_csv(report, ns.plots)

    experiment_id = registry.ensure_experiment(uri, artifact_root=Path("mlartifacts"))
    tags = {"kind": "robustness", "variants": ",".join(study.variants), "seeds": ",".join(map(str, study.seeds)),
            "champion": str(promotion["champion_after"])}  # fmt: skip
    run_id = registry.start_run(uri, experiment_id, "robustness", tags)
    metrics = {f"{name}.{group}_psnr": row[group]["psnr"] for name, row in report["variants"].items()
               for group in ("in_family", "held_out") if group in row}  # fmt: skip
    registry.log_metrics(uri, run_id, metrics, step=0)
    for path in (ns.report, ns.markdown, ns.plots, ns.images):
        registry.log_artifact(uri, run_id, path, "robustness")
    registry.end_run(uri, run_id)
    print(ns.markdown.read_text().split("## SSIM")[0])
    print(promotion["decision"])


if __name__ == "__main__":
    main()
