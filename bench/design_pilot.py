"""Design pilot: train several model/objective attempts for the same number of steps on the same fresh training
pairs (the on-the-fly stream's recipe, made once in this process and shared by every attempt) and score them side
by side on the materialised *validation* pairs, which hold every blur family of the zoo (held-out ones and
``none`` included).

The test split is never read. Each attempt is one plain PyTorch loop (no Ray), bf16 autocast + channels_last, same
seed, same batches, and is logged as an MLflow run tagged ``attempt=<name>`` in the ``bdirnet-design`` experiment.

Run (after ``dvc repro pairs``): ``.venv/bin/python bench/design_pilot.py --steps 360 [--attempts a,b,...]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from bdirnet import BDIRNet
from bdirnet.config import DegradeConfig, ModelConfig, TrainConfig, load_params
from bdirnet.datasets import read_manifest
from bdirnet.degrade import FAMILIES
from bdirnet.engine import build_optimizer, train_step
from bdirnet.images import decode_png
from bdirnet.losses import TrainingModule
from bdirnet.metrics import psnr
from bdirnet.streaming import TrainPairMaker, make_plan, read_photos, to_float

# name -> (model overrides, loss overrides)
ATTEMPTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "bdirnet": ({}, {}),
    "bdirnet_residual": ({"global_residual": True}, {}),
    "bdirnet_deep_latent": ({}, {"latent_min_level": 1}),
    "bdirnet_latent_0.5": ({}, {"latent_weight": 0.5}),
    "bdirnet_infonce": ({}, {"latent_loss": "infonce"}),
    "bdirnet_fft_0.05": ({}, {"fft_weight": 0.05}),
    "bdirnet_multiscale_0.5": ({}, {"multiscale_weight": 0.5}),
    "bdirnet_multiscale_1": ({}, {"multiscale_weight": 1.0}),
    "bdirnet_no_autoencode": ({}, {"autoencode_weight": 0.0}),
    # capacity / receptive field, for motion blur (7-31 px), which the default does not learn (issue 10)
    "bdirnet_levels4": ({"levels": 4}, {}),
    "bdirnet_width24": ({"width_channels": 24}, {}),
    "bdirnet_width32": ({"width_channels": 32}, {}),
    "bdirnet_blocks2": ({"encoder_blocks": 2, "decoder_blocks": 2}, {}),
    # NAFNet blocks (model.block): at width 16 half the parameters and FLOPs of the residual blocks, at 24 about equal
    "bdirnet_naf": ({"block": "nafnet"}, {}),
    "bdirnet_naf24": ({"block": "nafnet", "width_channels": 24}, {}),
    "transfer_residual_naf24": (
        {"block": "nafnet", "width_channels": 24, "said": False, "sair": False, "global_residual": True},
        {"latent_weight": 0.0, "autoencode_weight": 0.0},
    ),
    "transfer": ({"said": False, "sair": False}, {"latent_weight": 0.0, "autoencode_weight": 0.0}),
    "transfer_residual": (
        {"said": False, "sair": False, "global_residual": True},
        {"latent_weight": 0.0, "autoencode_weight": 0.0},
    ),
    "transfer_residual_multiscale_0.5": (
        {"said": False, "sair": False, "global_residual": True},
        {"latent_weight": 0.0, "autoencode_weight": 0.0, "multiscale_weight": 0.5},
    ),
    # the foil's last convolution starts small and random instead of zero (PyTorch's default init x 0.1), so its
    # decoder gets gradients from step 0 (zero: only the last layer does, until it has moved; stop 15)
    "transfer_residual_rgb_init": (
        {"said": False, "sair": False, "global_residual": True},
        {"latent_weight": 0.0, "autoencode_weight": 0.0},
    ),
    "transfer_residual_multiscale_1": (
        {"said": False, "sair": False, "global_residual": True},
        {"latent_weight": 0.0, "autoencode_weight": 0.0, "multiscale_weight": 1.0},
    ),
}


def load_val(root: Path, per_family: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The val pairs by family: (sharp, blurred) float tensors, the first ``per_family`` by pair id."""
    rows = pq.read_table(root / "val", columns=["pair_id", "family", "sharp", "blurred"]).to_pylist()
    rows.sort(key=lambda row: row["pair_id"])
    out = {}
    for family in FAMILIES:
        chosen = [row for row in rows if row["family"] == family][:per_family]
        if chosen:
            out[family] = tuple(
                torch.from_numpy(np.stack([decode_png(row[c]) for row in chosen])).permute(0, 3, 1, 2).float() / 255.0
                for c in ("sharp", "blurred")
            )
    return out  # type: ignore[return-value]


def motion_lengths(root: Path, per_family: int) -> np.ndarray:
    """The kernel length (px) of each motion val pair :func:`load_val` returns, in its order."""
    rows = pq.read_table(root / "val", columns=["pair_id", "family", "params"]).to_pylist()
    rows.sort(key=lambda row: row["pair_id"])
    chosen = [row for row in rows if row["family"] == "motion"][:per_family]
    return np.array([json.loads(row["params"])["kernel_px"] for row in chosen])


MOTION_BUCKETS = ((7, 13), (15, 21), (23, 31))
"""Motion kernel lengths (px) the pilot reports separately: does the network learn short streaks but not long?"""


def motion_by_length(gains: list[float], lengths: np.ndarray) -> dict[str, float]:
    """Mean motion gain (dB) per :data:`MOTION_BUCKETS` bucket of kernel length."""
    out = {}
    for low, high in MOTION_BUCKETS:
        chosen = [g for g, n in zip(gains, lengths, strict=True) if low <= n <= high]
        if chosen:
            out[f"{low}-{high}px"] = float(np.mean(chosen))
    return out


def training_pairs(
    ingested: Path,
    patch: int,
    seed: int,
    steps: int,
    batch: int,
    degrade_config: DegradeConfig,
    dead_leaves_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps * batch`` fresh pairs of the stream's recipe (no pair repeats), uint8 (N, 3, P, P), made 2,048 rows at
    a time (one call for 28,800 pairs took over 24 GB in the maker's float intermediates)."""
    total = steps * batch
    plan = make_plan(read_manifest(ingested), ingested, patch, seed, total, degrade_config, dead_leaves_share)
    maker = TrainPairMaker(plan, read_photos(plan))
    chunks = [maker({"id": np.arange(start, min(start + 2048, total))}) for start in range(0, total, 2048)]
    return tuple(torch.from_numpy(np.concatenate([c[k] for c in chunks])) for k in ("sharp", "blurred"))  # type: ignore[return-value]


def score(model: BDIRNet, val: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[str, float]]:
    model.eval()
    out = {}
    with torch.no_grad():
        for family, (sharp, blurred) in val.items():
            restored = torch.cat([model(blurred[i : i + 8]) for i in range(0, len(blurred), 8)])
            each, blurred_each = psnr(restored, sharp), psnr(blurred, sharp)
            out[family] = {
                "psnr": float(each.mean()),
                "blurred_psnr": float(blurred_each.mean()),
                "gain_each": [round(float(g), 4) for g in each - blurred_each],
            }
    return out


def run_attempt(
    name: str,
    base_model: ModelConfig,
    base_train: TrainConfig,
    data: tuple[torch.Tensor, torch.Tensor],
    val: dict[str, tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    batch: int,
    eval_every: int = 0,
    held_out: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train one attempt for ``steps`` steps and score it on val; with ``eval_every`` > 0 also every that many steps
    (the val curve of this one run: its cosine schedule spans all ``steps``, so a point is not a shorter run)."""
    model_overrides, loss_overrides = ATTEMPTS[name]
    model_config = dataclasses.replace(base_model, **model_overrides)
    loss = dataclasses.replace(base_train.loss, **loss_overrides)
    train_config = dataclasses.replace(base_train, loss=loss, batch_size=batch)
    torch.manual_seed(base_train.seed)
    model = BDIRNet(model_config)
    if name.endswith("_rgb_init"):
        with torch.no_grad():
            model.decoder.to_rgb.reset_parameters()
            model.decoder.to_rgb.weight.mul_(0.1)
            model.decoder.to_rgb.bias.zero_()
    module = TrainingModule(model, loss).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer, scheduler = build_optimizer(module, train_config, steps)
    sharp_all, blurred_all = data
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    for step in range(steps):
        index = slice(step * batch, (step + 1) * batch)
        sharp = to_float(sharp_all[index]).contiguous(memory_format=torch.channels_last)
        blurred = to_float(blurred_all[index]).contiguous(memory_format=torch.channels_last)
        model.train()
        train_step(module, optimizer, blurred, sharp, step, bf16=True, grad_clip_norm=1.0)
        scheduler.step()
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:
            point = summarise({"families": score(model, val)}, held_out)
            curve.append({"step": step + 1, **{k: round(v, 4) for k, v in point.items()}})
            print(f"  {name} step {step + 1}: " + ", ".join(f"{k} {v:+.2f}" for k, v in point.items()), flush=True)
    seconds = time.perf_counter() - started
    families = score(model, val)
    result = {"attempt": name, "steps": steps, "batch": batch, "seconds": round(seconds, 1), "families": families}
    if curve:
        result["curve"] = curve
    return result


def summarise(result: dict[str, Any], held_out: tuple[str, ...]) -> dict[str, float]:
    fams = result["families"]
    groups = {
        "in_family": [f for f in fams if f not in held_out and f != "none"],
        "held_out": [f for f in fams if f in held_out],
        "no_blur": [f for f in fams if f == "none"],
    }
    return {
        group: float(np.mean([fams[f]["psnr"] - fams[f]["blurred_psnr"] for f in members]))
        for group, members in groups.items()
    }


def log_to_mlflow(result: dict[str, Any], gains: dict[str, float]) -> None:
    import mlflow

    from bdirnet import registry

    uri = registry.tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bdirnet-design")
    with mlflow.start_run(run_name=result["attempt"], tags={"attempt": result["attempt"], "kind": "design_pilot"}):
        mlflow.log_params({"steps": result["steps"], "batch": result["batch"]})
        for family, values in result["families"].items():
            mlflow.log_metric(f"val_{family}_gain_db", values["psnr"] - values["blurred_psnr"])
        for group, gain in gains.items():
            mlflow.log_metric(f"val_{group}_gain_db", gain)
        mlflow.log_metric("train_seconds", result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"), help="the val pairs")
    parser.add_argument("--ingested", type=Path, default=Path("data/ingested"), help="the train photos")
    parser.add_argument("--val-per-family", type=int, default=64)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=360)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=0, help="training patch px (default: pairs.patch_px)")
    parser.add_argument("--dead-leaves", type=float, default=0.0, help="share of dead leaves training pairs")
    parser.add_argument("--attempts", default=",".join(ATTEMPTS))
    parser.add_argument("--out", type=Path, default=Path("reports/design_pilot.jsonl"))
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--eval-every", type=int, default=0, help="also score val every N steps (0: at the end only)")
    args = parser.parse_args()
    names = [n.strip() for n in args.attempts.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ATTEMPTS))
    if unknown:
        raise SystemExit(f"error: unknown attempts {unknown}; choose from {sorted(ATTEMPTS)}")
    base_model, base_train = load_params("model", args.params), load_params("train", args.params)
    degrade_config = load_params("degrade", args.params)
    patch = args.patch or load_params("pairs", args.params).patch_px
    data = training_pairs(
        args.ingested, patch, base_train.seed, args.steps, args.batch, degrade_config, args.dead_leaves
    )
    val = load_val(args.pairs, args.val_per_family)
    lengths = motion_lengths(args.pairs, args.val_per_family) if "motion" in val else None
    sizes = ", ".join(f"{f} {len(v[0])}" for f, v in val.items())
    print(f"{len(data[0])} fresh train pairs of {patch}² ({args.dead_leaves:.0%} dead leaves), val: {sizes}")
    print(f"{'attempt':<22} {'in-family':>9} {'held-out':>9} {'no blur':>9} {'s':>6}  "
          + " ".join(f"{f:>10}" for f in val))  # fmt: skip
    for name in names:
        result = run_attempt(
            name, base_model, base_train, data, val, args.steps, args.batch, args.eval_every,
            degrade_config.held_out_families,
        )  # fmt: skip
        gains = summarise(result, degrade_config.held_out_families)
        result["gains"] = gains
        if lengths is not None:
            result["motion_by_length"] = motion_by_length(result["families"]["motion"]["gain_each"], lengths)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
        if not args.no_mlflow:
            log_to_mlflow(result, gains)
        per_family = " ".join(f"{v['psnr'] - v['blurred_psnr']:>+10.2f}" for v in result["families"].values())
        print(f"{name:<22} {gains['in_family']:>+9.2f} {gains['held_out']:>+9.2f} {gains.get('no_blur', 0):>+9.2f} "
              f"{result['seconds']:>6.0f}  "
              f"{per_family}", flush=True)  # fmt: skip
        if "motion_by_length" in result:
            buckets = ", ".join(f"{k} {v:+.2f}" for k, v in result["motion_by_length"].items())
            print(f"{'':<22} motion by kernel length: {buckets}", flush=True)


if __name__ == "__main__":
    main()
