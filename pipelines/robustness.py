"""Stage `robustness`: gather every study run and the classical references into the robustness report, draw the
picture grids, and move the ``champion`` alias when the promotion gate passes.

Writes ``reports/robustness.json`` (DVC metrics), ``reports/robustness.md``, ``reports/robustness.csv`` (DVC
plots) and ``reports/robustness/`` (``<family>.png`` grids: blurred | picture variants | sharp, and
``real_<name>.png`` for the real blurred photos), and logs them all to an MLflow run tagged ``kind=robustness``.

The champion candidate is the seed of ``study.promote_variant`` with the best validation PSNR (never chosen on
the test split); the gate compares its test group means with the current champion's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from _common import parser, stage_main

from bdirnet import registry
from bdirnet.config import load_params
from bdirnet.evaluation import evaluate_restorer, group_means, read_test_pairs, save_png
from bdirnet.robustness import build, decide, load_run_reports, picture_grid, read_image, render_markdown, run_dir
from bdirnet.runtime import stage_location


def champion_groups(uri: str, version: str, runs: dict[str, list[dict[str, Any]]], pairs_uri: str,
                    held_out: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """The champion's test group means: from this study's eval report when it is one of its runs, else scored."""
    for reports in runs.values():
        for report in reports:
            if report["model"]["version"] == version:
                return {group: report[group] for group in ("in_family", "held_out")}
    model = registry.load_model(uri, version)
    pairs = list(read_test_pairs(pairs_uri))
    with torch.no_grad():
        scores = evaluate_restorer(pairs, lambda blurred, _: model(blurred), held_out)
    return group_means({family: s.summary() for family, s in scores.items()})


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
    study, gate = load_params("study", ns.params), load_params("evaluate", ns.params)
    degrade = load_params("degrade", ns.params)
    runs = load_run_reports(ns.runs, study)
    try:
        classical = json.loads(ns.classical.read_text())["methods"]
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{ns.classical}: not a classical report ({error!r})") from None
    report = build(runs, classical, study, degrade.held_out_families)

    # Promotion: the promote variant's seed with the best validation PSNR against the current champion.
    uri = registry.tracking_uri()
    candidate = max(runs[study.promote_variant], key=lambda r: float(r["best_val_psnr"] or float("-inf")))
    version = candidate["model"]["version"]
    for reports in runs.values():
        for run_report in reports:
            where = f"{ns.runs}/{run_report['variant']}-s{run_report['seed']}/eval.json"
            registry.require_version(uri, run_report["model"]["version"], run_report.get("weights_sha256"), where)
    champion_before = registry.alias_version(uri, "champion")
    champion = None
    if champion_before is not None and champion_before != version:
        pairs_uri = f"{stage_location(ns.pairs, 'pairs')}/test"
        champion = champion_groups(uri, champion_before, runs, pairs_uri, degrade.held_out_families)
    if champion_before == version:
        promoted, decision = False, f"version {version} is already the champion"
    else:
        promoted, decision = decide(candidate, champion, gate)
    if promoted:
        registry.set_alias(uri, "champion", version)
    promotion: dict[str, Any] = {
        "candidate": f"{study.promote_variant} seed {candidate['seed']} (version {version}, best val PSNR "
        f"{float(candidate['best_val_psnr']):.2f} dB)",
        "candidate_version": version,
        "champion_before": champion_before,
        "champion_after": version if promoted else champion_before,
        "promoted": promoted,
        "decision": decision,
    }

    # Picture grids: blurred | picture variants (first seed) | Wiener oracle | sharp, per family; real photos.
    first_seed = study.seeds[0]
    picture_ids = {
        report_["pictures"][f] for reports in runs.values() for report_ in reports for f in report_["pictures"]
    }
    classical_ids = {pid for method in classical.values() for pid in method["pictures"].values()}
    if picture_ids != classical_ids:
        raise ValueError(f"{ns.classical}: picture crops differ from the study runs' (rerun the classical stage)")
    families = list(report["variants"]["blurred"]["families"])
    for family in families:
        columns = [("blurred", read_image(ns.classical_images / "blurred" / f"{family}.png"))]
        for variant in study.picture_variants:
            columns.append((variant, read_image(run_dir(ns.runs, variant, first_seed) / "images" / f"{family}.png")))
        columns.append(("wiener (oracle)", read_image(ns.classical_images / "wiener_oracle" / f"{family}.png")))
        columns.append(("sharp", read_image(ns.classical_images / "sharp" / f"{family}.png")))
        save_png(picture_grid(columns), ns.images / f"{family}.png")
    real_grids = []
    for photo in sorted((ns.classical_images / "blurred").glob("real_*.png")):
        columns = [("blurred (real)", read_image(photo))]
        for variant in study.variants:
            columns.append((variant, read_image(run_dir(ns.runs, variant, first_seed) / "images" / photo.name)))
        save_png(picture_grid(columns), ns.images / photo.name)
        real_grids.append(photo.stem)
    promotion["real_grids"] = real_grids

    report["promotion"] = promotion
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    ns.markdown.write_text(render_markdown(report, "Robustness study: BDIRNet vs the transfer networks"))
    with ns.plots.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "variant", "family", "held_out", "psnr", "psnr_std", "ssim"])
        for name, row in report["variants"].items():
            for family, cell in row["families"].items():
                writer.writerow([f"{family} / {name}", name, family, cell["held_out"], cell["psnr"],
                                 cell["psnr_std"], cell["ssim"]])  # fmt: skip

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
    print(decision)


if __name__ == "__main__":
    main()
