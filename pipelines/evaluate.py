"""Stage `evaluate`: load the registered model from the MLflow registry, score every blur family, promote."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from _common import parser, stage_main

from bdirnet import registry
from bdirnet.config import load_params
from bdirnet.evaluation import (
    TestPair,
    evaluate_restorer,
    format_table,
    group_means,
    image_row,
    read_test_pairs,
    save_png,
)
from bdirnet.runtime import stage_location


def score(model: Any, pairs: list[TestPair], held_out: tuple[str, ...]) -> dict[str, Any]:
    scores = evaluate_restorer(pairs, lambda blurred, _: model(blurred), held_out)
    return {family: s.summary() for family, s in scores.items()}


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, gate: Any) -> tuple[bool, str]:
    """The promotion gate on robustness (held-out mean up, in-family mean not down by more than a margin)."""
    ours = group_means(challenger)
    if champion is None:
        return True, "no champion yet"
    theirs = group_means(champion)
    held_gain = ours["held_out"]["psnr"] - theirs["held_out"]["psnr"]
    in_drop = theirs["in_family"]["psnr"] - ours["in_family"]["psnr"]
    ok = held_gain > gate.min_held_out_gain_db and in_drop <= gate.max_in_family_drop_db
    verdict = "promoted" if ok else "kept the champion"
    return ok, (
        f"{verdict}: held-out mean {held_gain:+.2f} dB vs champion (needs > {gate.min_held_out_gain_db}), "
        f"in-family mean {-in_drop:+.2f} dB (may drop at most {gate.max_in_family_drop_db})"
    )


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--pairs", type=Path, required=True, help="local pairs folder (default storage)")
    args.add_argument("--registered", type=Path, required=True, help="reports/registered.json")
    args.add_argument("--report", type=Path, required=True, help="reports/eval.json")
    args.add_argument("--plots", type=Path, required=True, help="reports/robustness.csv")
    args.add_argument("--images", type=Path, required=True, help="reports/images/")
    ns = args.parse_args()
    degrade, gate = load_params("degrade", ns.params), load_params("evaluate", ns.params)
    registered = json.loads(ns.registered.read_text())
    version = str(registered["version"])
    pairs_root = stage_location(ns.pairs, "pairs")
    pairs = list(read_test_pairs(f"{pairs_root}/test"))
    uri = registry.tracking_uri()
    torch.set_grad_enabled(False)
    model = registry.load_model(uri, version)

    best_worst: dict[str, list[tuple[float, TestPair, torch.Tensor]]] = {}

    def keep(pair: TestPair, restored: torch.Tensor, gain_db: float) -> None:
        best_worst.setdefault(pair.family, []).append((gain_db, pair, restored))

    scores = evaluate_restorer(pairs, lambda blurred, _: model(blurred), degrade.held_out_families, keep)
    families = {family: s.summary() for family, s in scores.items()}
    champion_version = registry.alias_version(uri, "champion")
    champion_families = None
    if champion_version is not None and champion_version != version:
        champion_families = score(registry.load_model(uri, champion_version), pairs, degrade.held_out_families)
    promoted, decision = decide(families, champion_families, gate)
    if promoted:
        registry.set_alias(uri, "champion", version)
    means = group_means(families)
    for group, values in means.items():
        registry.set_version_tag(uri, version, f"{group}_psnr", f"{values['psnr']:.4f}")

    report = {
        "model": {"name": registry.MODEL_NAME, "version": version},
        "promoted": promoted,
        "decision": decision,
        "champion_before": champion_version,
        "families": families,
        **means,
    }
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    ns.plots.parent.mkdir(parents=True, exist_ok=True)
    with ns.plots.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["family", "held_out", "method", "psnr", "ssim"])
        for family, row in families.items():
            writer.writerow([family, row["held_out"], "bdirnet", row["psnr"], row["ssim"]])
            writer.writerow([family, row["held_out"], "blurred", row["blurred_psnr"], row["blurred_ssim"]])
    for family, items in best_worst.items():
        items.sort(key=lambda item: item[0])
        chosen = {"worst": items[: gate.images_per_family], "best": items[::-1][: gate.images_per_family]}
        for kind, picks in chosen.items():
            for rank, (_gain, pair, restored) in enumerate(picks):
                save_png(image_row(pair.blurred, restored, pair.sharp), ns.images / f"{family}_{kind}_{rank}.png")
    registry.log_artifact(uri, registered["run_id"], ns.report, "evaluation")
    print(format_table(families, f"bdirnet v{version} on {len(pairs)} test pairs (PSNR dB, SSIM)"))
    print(decision)


if __name__ == "__main__":
    main()
