"""Stage `train@<variant>-<seed>`: Ray Train TorchTrainer for one study run, tracked in one MLflow run (tags
``variant`` and ``seed``). Training pairs are made on the fly from the ingested train photos (a fresh blur every
epoch, :mod:`bdirnet.streaming`); validation uses the materialised val pairs.

Writes ``--weights`` (``models/<variant>-s<seed>.pt``: the best checkpoint's state_dict, ModelConfig and run
meta, see :mod:`bdirnet.weights`; a DVC output, so a clone without it reruns this stage) and ``--report``
(``train.json``, git-tracked: paths relative to the repository or ``$BDIRNET_STORAGE``, the tracking URI
without credentials)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from _common import parser, stage_main

from bdirnet import registry
from bdirnet.config import load_params, load_variant, to_dict
from bdirnet.datasets import read_manifest
from bdirnet.paired import read_paired_datasets
from bdirnet.pairs import PAIRED_FOLDER
from bdirnet.runtime import init_ray, portable_location, shutdown_ray, stage_location
from bdirnet.storage_hash import folder_digest
from bdirnet.streaming import make_plan, plan_identity
from bdirnet.training import TrainingFailed, fit, load_checkpoint_model, run_name
from bdirnet.weights import save_weights


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(prefix: str, data: dict[str, object]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= flatten(f"{prefix}{key}.", value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@stage_main
def main() -> None:
    args = parser(__doc__)
    args.add_argument("--variant", default="bdirnet", help="a name in study.variants (overrides: variants.<name>)")
    args.add_argument("--seed", type=int, default=0, help="a seed in study.seeds")
    args.add_argument("--ingested", type=Path, required=True, help="ingested dataset folder (the train photos)")
    args.add_argument("--pairs", type=Path, required=True, help="local pairs folder (val pairs; default storage)")
    args.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="default Ray storage_path")
    args.add_argument("--weights", type=Path, required=True, help="models/<variant>-s<seed>.pt (DVC output)")
    args.add_argument("--report", type=Path, required=True, help="reports/runs/<variant>-s<seed>/train.json")
    ns = args.parse_args()
    # A job's working dir may be gone by the time the outputs are written.
    ns.report, ns.weights = ns.report.resolve(), ns.weights.resolve()
    repo_root = Path.cwd().resolve()
    model_config, train_config = load_variant(ns.params, ns.variant, ns.seed)
    pairs_config, degrade_config = load_params("pairs", ns.params), load_params("degrade", ns.params)
    records = read_manifest(ns.ingested)
    plan = make_plan(
        records,
        ns.ingested,
        pairs_config.patch_px,
        train_config.seed,
        train_config.samples_per_epoch,
        degrade_config,
        train_config.dead_leaves_share,
        paired=read_paired_datasets(ns.ingested / PAIRED_FOLDER) if train_config.paired_share > 0 else None,
        paired_share=train_config.paired_share,
        paired_datasets=train_config.paired_datasets,
    )
    pairs_root = stage_location(ns.pairs, "pairs")
    storage_path = stage_location(ns.checkpoints, "checkpoints")
    # What the run learns from: the val pairs and the train photos with the stream's recipe.
    stream_identity = plan_identity(plan)
    stream_identity["photos"] = sorted(r.sha256 for r in records if r.split == "train")
    if plan.paired_share > 0:  # and the real pairs' bytes; a plan without them keeps the identity it had before them
        paired = read_paired_datasets(ns.ingested / PAIRED_FOLDER)
        used = set(plan.paired_files)
        stream_identity["paired"] = sorted(sha for records_ in paired.values() for r in records_
                                           if (f"{PAIRED_FOLDER}/{r.blurred}", f"{PAIRED_FOLDER}/{r.sharp[0]}") in used
                                           for sha in r.sha256)  # fmt: skip

    data_hash = folder_digest(f"{pairs_root}/val", extra=json.dumps(stream_identity, sort_keys=True))
    name = run_name(train_config, model_config, data_hash)
    uri = registry.tracking_uri()
    experiment_id = registry.ensure_experiment(uri, artifact_root=Path("mlartifacts"))
    tags = {
        "git_commit": git_commit(),
        "data_hash": data_hash,
        "variant": ns.variant,
        "seed": str(ns.seed),
        "attempt": "study",
    }
    run_id = registry.find_or_start_run(uri, experiment_id, name, tags)
    params = flatten("model.", to_dict(model_config)) | flatten("train.", to_dict(train_config))
    registry.log_params(uri, run_id, params)
    init_ray()
    try:
        try:
            result = fit(
                plan,
                f"{pairs_root}/val",
                model_config,
                train_config,
                degrade_config,
                storage_path,
                name,
                uri,
                run_id,
            )
        except BaseException as error:
            registry.end_run(uri, run_id, status="FAILED")
            if isinstance(error, TrainingFailed):  # diverged or out of retries: one line, the checkpoint is kept
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        registry.end_run(uri, run_id)
        meta = {
            "variant": ns.variant,
            "seed": ns.seed,
            "run_name": name,
            "data_hash": data_hash,
            "git_commit": tags["git_commit"],
            "best_val_psnr": result.best_val_psnr,
            "epochs": result.epochs,
            "params": params,
        }
        stream = {"paired_share": plan.paired_share, "paired_train_pairs": dict(Counter(plan.paired_families))}
        weights_sha256 = save_weights(ns.weights, load_checkpoint_model(result.best_checkpoint), meta)
        report = {
            "variant": ns.variant,
            "seed": ns.seed,
            "mlflow_run_id": run_id,
            "tracking_uri": registry.redact_uri(uri, repo_root),
            "data_hash": data_hash,
            "weights": ns.weights.relative_to(repo_root).as_posix()
            if ns.weights.is_relative_to(repo_root)
            else ns.weights.name,
            "weights_sha256": weights_sha256,
            "stream": stream,
            **vars(result),
            "best_checkpoint": portable_location(result.best_checkpoint),
            "latest_checkpoint": portable_location(result.latest_checkpoint),
        }
        ns.report.parent.mkdir(parents=True, exist_ok=True)
        ns.report.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        # Last: under `ray job submit`, disconnecting releases the job's working dir (our cwd).
        shutdown_ray()
    print(f"train: best val PSNR {result.best_val_psnr:.2f} dB after {result.epochs} epochs "
          f"in {result.wall_seconds:.0f}s; MLflow run {run_id}")  # fmt: skip


if __name__ == "__main__":
    main()
