"""Stage `register@<variant>-<seed>`: log the run's best checkpoint into its training run and register it as a
version of ``bdirnet`` (alias challenger), tagged with its variant, seed and switches."""

from __future__ import annotations

import json
from pathlib import Path

from _common import parser, stage_main

import bdirnet
from bdirnet import registry
from bdirnet.model import count_parameters
from bdirnet.training import load_checkpoint_model


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--train-report", type=Path, required=True, help="reports/runs/<run>/train.json")
    args.add_argument("--report", type=Path, required=True, help="reports/runs/<run>/registered.json")
    ns = args.parse_args()
    try:
        train = json.loads(ns.train_report.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{ns.train_report}: cannot read the train report ({error})") from None
    model = load_checkpoint_model(train["best_checkpoint"])
    config = model.config
    tags = {
        "variant": str(train.get("variant", train["run_name"].rsplit("-", 1)[0])),
        "seed": str(train.get("seed", "")),
        "ray_run_name": train["run_name"],
        "data_hash": train["data_hash"],
        "said": str(config.said).lower(),
        "sair": str(config.sair).lower(),
        "global_residual": str(config.global_residual).lower(),
        "parameters": str(count_parameters(model)),
        "best_val_psnr": f"{train['best_val_psnr']:.4f}",
    }
    uri = registry.tracking_uri()
    version = registry.log_and_register_model(uri, train["mlflow_run_id"], model, Path(bdirnet.__file__).parent, tags)
    report = {
        "name": registry.MODEL_NAME,
        "version": version,
        "alias": "challenger",
        "run_id": train["mlflow_run_id"],
        "variant": tags["variant"],
        "seed": train.get("seed"),
        "best_val_psnr": train["best_val_psnr"],
        "train_wall_seconds": train.get("wall_seconds"),
    }
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"register: {registry.MODEL_NAME} version {version} ({tags['variant']}, seed {tags['seed']}, alias "
          f"challenger), {tags['parameters']} parameters")  # fmt: skip


if __name__ == "__main__":
    main()
