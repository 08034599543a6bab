"""Stage `evaluate@<variant>-<seed>`: load one study run's model from the MLflow registry, score it on every blur
family of the test pairs and, at full resolution with its published protocol, on the test pairs of every paired
dataset ingested (bdirnet/paired_eval.py), time it, and save its restorations of the picture crops and of the real
blurred photos.

Writes ``--report`` (per-family PSNR/SSIM mean and std over images, per-image values, group means, parameter
count, seconds per image; ``datasets``: per paired dataset its protocol and scores) and ``--images``
(``<family>.png`` restored picture crops, ``real_<name>.png``); both are also logged to the run in MLflow under
``evaluation/``. Promotion happens in the `robustness` stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from _common import parser, stage_main

from bdirnet import registry
from bdirnet.config import load_params
from bdirnet.evaluation import (
    evaluate_restorer,
    format_table,
    picture_pairs,
    read_test_pairs,
    real_blur_photos,
    report_groups,
    seconds_per_image,
)
from bdirnet.images import load_image, save_png, to_uint8
from bdirnet.model import count_parameters
from bdirnet.paired import read_paired_datasets
from bdirnet.paired_eval import evaluate_paired
from bdirnet.runtime import stage_location


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--pairs", type=Path, required=True, help="local pairs folder (default storage)")
    args.add_argument("--registered", type=Path, required=True, help="reports/runs/<run>/registered.json")
    args.add_argument("--real-blur", type=Path, required=True, help="folder of real blurred photos, e.g. clock")
    args.add_argument("--paired", type=Path, help="ingested paired datasets, e.g. data/ingested/paired (optional)")
    args.add_argument("--report", type=Path, required=True, help="reports/runs/<run>/eval.json")
    args.add_argument("--images", type=Path, required=True, help="reports/runs/<run>/images/")
    ns = args.parse_args()
    degrade, evaluate = load_params("degrade", ns.params), load_params("evaluate", ns.params)
    try:
        registered = json.loads(ns.registered.read_text())
        version, run_id = str(registered["version"]), str(registered["run_id"])
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{ns.registered}: not a register report ({error!r})") from None
    pairs = list(read_test_pairs(f"{stage_location(ns.pairs, 'pairs')}/test"))
    uri = registry.tracking_uri()
    registry.require_version(uri, version, registered.get("weights_sha256"), where=str(ns.registered))
    torch.set_grad_enabled(False)
    model = registry.load_model(uri, version)

    scores = evaluate_restorer(pairs, lambda blurred, _: model(blurred), degrade.held_out_families)
    families = {family: s.summary(per_image=True) for family, s in scores.items()}
    means = report_groups(families)
    for group, values in means.items():
        registry.set_version_tag(uri, version, f"{group}_psnr", f"{values['psnr']:.4f}")

    paired = read_paired_datasets(ns.paired) if ns.paired is not None else {}
    datasets = evaluate_paired(model, ns.paired, paired, evaluate) if paired else {}
    for dataset, values in datasets.items():
        registry.set_version_tag(uri, version, f"{dataset}_psnr", f"{values['psnr']:.4f}")

    pictures = picture_pairs(pairs)
    for family, pair in pictures.items():
        save_png(to_uint8(model(pair.blurred))[0], ns.images / f"{family}.png")
    for photo in real_blur_photos(ns.real_blur):
        save_png(to_uint8(model(load_image(photo)))[0], ns.images / f"real_{photo.stem}.png")
    timed = next(iter(pictures.values())).blurred
    seconds = seconds_per_image(model, timed)

    report = {
        "variant": registered.get("variant"),
        "seed": registered.get("seed"),
        "model": {"name": registry.MODEL_NAME, "version": version},
        "run_id": run_id,
        "weights_sha256": registered.get("weights_sha256"),
        "parameters": count_parameters(model),
        "seconds_per_image": round(seconds, 5),
        "timed_image_hw": list(timed.shape[-2:]),
        "best_val_psnr": registered.get("best_val_psnr"),
        "pictures": {family: pair.pair_id for family, pair in pictures.items()},
        "families": families,
        "datasets": datasets,
        **means,
    }
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    registry.log_artifact(uri, run_id, ns.report, "evaluation")
    registry.log_artifact(uri, run_id, ns.images, "evaluation")
    title = f"{registered.get('variant')} seed {registered.get('seed')}: bdirnet v{version} on {len(pairs)} test pairs"
    print(format_table(families, title))
    for dataset, values in datasets.items():
        print(f"{dataset:<12} {values['protocol']:>10} {values['n']:>4} {values['psnr']:>7.2f} "
              f"{values['blurred_psnr']:>8.2f} {values['psnr'] - values['blurred_psnr']:>+6.2f} {values['ssim']:>6.3f}"
              "  (whole images)")  # fmt: skip
    print(f"{report['parameters']:,} parameters, {1000 * seconds:.1f} ms per {timed.shape[-2]}x{timed.shape[-1]} image")


if __name__ == "__main__":
    main()
