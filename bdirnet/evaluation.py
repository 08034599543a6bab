"""Per-family evaluation of a restoration model on the test pairs, and the robustness summary.

Every test pair is restored one image at a time (test crops differ in size); PSNR and SSIM are computed per
image (:mod:`bdirnet.metrics`) for the restored image and for the blurred input, then aggregated per family
(mean and standard deviation over images) and over the in-family / held-out groups.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bdirnet.degrade import FAMILIES
from bdirnet.images import decode_png, to_tensor
from bdirnet.metrics import METRICS, family_group, group_means, psnr, rounded, score

Restorer = Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]


@dataclass
class TestPair:
    pair_id: str
    source: str
    family: str
    params: dict[str, Any]
    sharp: torch.Tensor  # (1, 3, H, W) float in [0, 1]
    blurred: torch.Tensor


def read_test_pairs(uri: str) -> Iterator[TestPair]:
    """The test pairs of a pairs folder (local or a URI pyarrow reads), sorted by pair id."""
    import pyarrow.parquet as pq

    table = pq.read_table(uri, columns=["pair_id", "source", "family", "params", "sharp", "blurred"])
    rows = sorted(table.to_pylist(), key=lambda row: row["pair_id"])
    if not rows:
        raise ValueError(f"{uri}: no test pairs")
    for row in rows:
        yield TestPair(
            pair_id=row["pair_id"],
            source=row["source"],
            family=row["family"],
            params=json.loads(row["params"]),
            sharp=to_tensor(decode_png(row["sharp"])),
            blurred=to_tensor(decode_png(row["blurred"])),
        )


@dataclass
class FamilyScores:
    """The per-image scores of one family: pair id -> metric name -> value, restored and blurred input."""

    held_out: bool
    group: str  # bdirnet.metrics.GROUPS
    restored: dict[str, dict[str, float]] = field(default_factory=dict)
    blurred: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self, per_image: bool = False) -> dict[str, Any]:
        """Per metric: mean and std over images, and the blurred input's mean; with ``per_image``, also ``images``:
        pair id -> {metric: value}."""
        out: dict[str, Any] = {"held_out": self.held_out, "group": self.group, "n": len(self.restored)}
        for name in METRICS:
            values = np.asarray([scores[name] for scores in self.restored.values()], dtype=np.float64)
            out[name] = rounded(name, values.mean())
            out[f"{name}_std"] = rounded(name, values.std())
        for name in METRICS:
            values = np.asarray([scores[name] for scores in self.blurred.values()], dtype=np.float64)
            out[f"blurred_{name}"] = rounded(name, values.mean())
        if per_image:
            out["images"] = {
                pair_id: {name: rounded(name, value) for name, value in scores.items()}
                for pair_id, scores in self.restored.items()
            }
        return out


def evaluate_restorer(
    pairs: list[TestPair],
    restore: Restorer,
    held_out_families: tuple[str, ...],
    on_image: Callable[[TestPair, torch.Tensor, float], None] | None = None,
) -> dict[str, FamilyScores]:
    """Score ``restore(blurred, params)`` on every pair with every metric of :data:`bdirnet.metrics.METRICS`,
    grouped by family.

    ``on_image(pair, restored, gain_db)`` is called for every pair with its PSNR gain over the blurred input.
    """
    scores: dict[str, FamilyScores] = {}
    for pair in pairs:
        with torch.no_grad():
            restored = restore(pair.blurred, pair.params).clamp(0, 1)
        family = scores.setdefault(
            pair.family,
            FamilyScores(held_out=pair.family in held_out_families, group=family_group(pair.family, held_out_families)),
        )
        family.restored[pair.pair_id] = score(restored, pair.sharp)
        family.blurred[pair.pair_id] = score(pair.blurred, pair.sharp)
        if on_image is not None:
            gain = family.restored[pair.pair_id]["psnr"] - family.blurred[pair.pair_id]["psnr"]
            on_image(pair, restored, gain)
    zoo_order = {name: index for index, name in enumerate(FAMILIES)}  # reports list families as the zoo does
    return {name: scores[name] for name in sorted(scores, key=lambda f: (zoo_order.get(f, len(zoo_order)), f))}


def report_groups(families: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The in-family / held-out / no-blur means of one evaluation: every metric, restored and blurred, and the PSNR
    gain."""
    return group_means(families, [*METRICS, *(f"blurred_{name}" for name in METRICS)])


def format_table(families: dict[str, dict[str, Any]], title: str) -> str:
    """A fixed-width per-family table for the console."""
    lines = [title, f"{'family':<12} {'held-out':>8} {'n':>4} {'PSNR':>7} {'blurred':>8} {'gain':>6} {'SSIM':>6}"]
    for name, row in families.items():
        gain = row["psnr"] - row["blurred_psnr"]
        lines.append(
            f"{name:<12} {'yes' if row['held_out'] else 'no':>8} {row['n']:>4} {row['psnr']:>7.2f} "
            f"{row['blurred_psnr']:>8.2f} {gain:>+6.2f} {row['ssim']:>6.3f}"
        )
    for group, values in report_groups(families).items():
        lines.append(
            f"{group:<12} {'':>8} {'':>4} {values['psnr']:>7.2f} {values['blurred_psnr']:>8.2f} "
            f"{values['gain_db']:>+6.2f} {values['ssim']:>6.3f}"
        )
    return "\n".join(lines)


def picture_pairs(pairs: list[TestPair]) -> dict[str, TestPair]:
    """The pair shown in the picture grids for each family: the most blurred one (lowest blurred-input PSNR,
    ties by pair id). The choice depends on the data only, so every method shows the same crop."""
    chosen: dict[str, tuple[float, str, TestPair]] = {}
    for pair in pairs:
        key = (float(psnr(pair.blurred, pair.sharp)[0]), pair.pair_id, pair)
        if pair.family not in chosen or key[:2] < chosen[pair.family][:2]:
            chosen[pair.family] = key
    return {family: chosen[family][2] for family in sorted(chosen)}


def seconds_per_image(restore: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of ``restore(image)`` over ``repeats`` calls after one warm-up call."""
    import time

    times = []
    with torch.no_grad():
        restore(image)
        for _ in range(repeats):
            started = time.perf_counter()
            restore(image)
            times.append(time.perf_counter() - started)
    return float(np.median(times))


REAL_BLUR_SUFFIXES = (".png", ".jpg", ".jpeg")


def real_blur_photos(folder: Path) -> list[Path]:
    """The real blurred photos (no ground truth) of a folder, restored for side-by-side viewing only."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: the real-blur folder does not exist (run `dvc repro bundle`)")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in REAL_BLUR_SUFFIXES)
