"""Stage `register@<variant>-<seed>`: make sure the current tracking server holds a version of ``bdirnet`` for this
run's weights file (``models/<variant>-s<seed>.pt``), matched by its SHA-256 tag.

The registry is derived state: this stage runs on every ``dvc repro`` (``always_changed``). When the version is
there it writes nothing new (a second or two); on a fresh clone after ``dvc pull``, or with another
``MLFLOW_TRACKING_URI``, it registers the file again, into the training run when this server has it, else into a
new run carrying the weights file's params. A new version gets the alias ``challenger`` and tags for its variant,
seed and switches. Writes ``--report`` (``registered.json``: version, run id, weights hash).
"""

from __future__ import annotations

import json
from pathlib import Path

from _common import parser, stage_main

import bdirnet
from bdirnet import registry
from bdirnet.weights import file_sha256, load_weights, read_weights


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--weights", type=Path, required=True, help="models/<run>.pt, written by train")
    args.add_argument("--train-report", type=Path, required=True, help="reports/runs/<run>/train.json")
    args.add_argument("--report", type=Path, required=True, help="reports/runs/<run>/registered.json")
    ns = args.parse_args()
    try:
        train = json.loads(ns.train_report.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{ns.train_report}: cannot read the train report ({error})") from None
    weights_sha256 = file_sha256(ns.weights)
    _, config, meta = read_weights(ns.weights)  # validates the file before anything is registered
    from bdirnet.model import BDIRNet, count_parameters

    tags = {
        "variant": str(meta["variant"]),
        "seed": str(meta["seed"]),
        "ray_run_name": str(meta["run_name"]),
        "data_hash": str(meta["data_hash"]),
        "said": str(config.said).lower(),
        "sair": str(config.sair).lower(),
        "global_residual": str(config.global_residual).lower(),
        "parameters": str(count_parameters(BDIRNet(config))),
        "best_val_psnr": f"{meta['best_val_psnr']:.4f}",
    }
    uri = registry.tracking_uri()
    registration = registry.ensure_registered(
        uri,
        weights_sha256,
        lambda: load_weights(ns.weights)[0],
        Path(bdirnet.__file__).parent,
        tags,
        run_id=train.get("mlflow_run_id"),
        run_name=str(meta["run_name"]),
        params=dict(meta["params"]),
        extra_artifact=ns.weights,
    )
    report = {
        "name": registry.MODEL_NAME,
        "version": registration.version,
        "run_id": registration.run_id,
        "variant": tags["variant"],
        "seed": meta["seed"],
        "weights": ns.weights.as_posix(),
        "weights_sha256": weights_sha256,
        "best_val_psnr": meta["best_val_psnr"],
        "train_wall_seconds": train.get("wall_seconds"),
    }
    ns.report.parent.mkdir(parents=True, exist_ok=True)
    ns.report.write_text(json.dumps(report, indent=2) + "\n")
    what = "registered as" if registration.created else "already registered as"
    print(f"register: {ns.weights} {what} {registry.MODEL_NAME} version {registration.version} "
          f"({tags['variant']}, seed {tags['seed']}) on {registry.redact_uri(uri)}")  # fmt: skip


if __name__ == "__main__":
    main()
