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

from bdirnet.metrics import psnr, ssim
from bdirnet.pairs import decode_png

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
            sharp=_to_tensor(decode_png(row["sharp"])),
            blurred=_to_tensor(decode_png(row["blurred"])),
        )


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0


@dataclass
class FamilyScores:
    held_out: bool
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    blurred_psnr: list[float] = field(default_factory=list)
    blurred_ssim: list[float] = field(default_factory=list)
    pair_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> tuple[float, float]:
            array = np.asarray(values, dtype=np.float64)
            return float(array.mean()), float(array.std())

        psnr_mean, psnr_std = stats(self.psnr)
        ssim_mean, ssim_std = stats(self.ssim)
        return {
            "held_out": self.held_out,
            "n": len(self.psnr),
            "psnr": round(psnr_mean, 4),
            "psnr_std": round(psnr_std, 4),
            "ssim": round(ssim_mean, 5),
            "ssim_std": round(ssim_std, 5),
            "blurred_psnr": round(stats(self.blurred_psnr)[0], 4),
            "blurred_ssim": round(stats(self.blurred_ssim)[0], 5),
        }


def evaluate_restorer(
    pairs: list[TestPair],
    restore: Restorer,
    held_out_families: tuple[str, ...],
    on_image: Callable[[TestPair, torch.Tensor, float], None] | None = None,
) -> dict[str, FamilyScores]:
    """Score ``restore(blurred, params)`` on every pair, grouped by family.

    ``on_image(pair, restored, gain_db)`` is called for every pair with its PSNR gain over the blurred input.
    """
    scores: dict[str, FamilyScores] = {}
    for pair in pairs:
        with torch.no_grad():
            restored = restore(pair.blurred, pair.params).clamp(0, 1)
        family = scores.setdefault(pair.family, FamilyScores(held_out=pair.family in held_out_families))
        restored_psnr = float(psnr(restored, pair.sharp)[0])
        blurred_psnr = float(psnr(pair.blurred, pair.sharp)[0])
        family.psnr.append(restored_psnr)
        family.ssim.append(float(ssim(restored, pair.sharp)[0]))
        family.blurred_psnr.append(blurred_psnr)
        family.blurred_ssim.append(float(ssim(pair.blurred, pair.sharp)[0]))
        family.pair_ids.append(pair.pair_id)
        if on_image is not None:
            on_image(pair, restored, restored_psnr - blurred_psnr)
    return scores


def group_means(families: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM (restored and blurred) over the in-family and the held-out families."""
    groups: dict[str, dict[str, float]] = {}
    for group, held_out in (("in_family", False), ("held_out", True)):
        members = [f for f in families.values() if f["held_out"] is held_out]
        if not members:
            continue
        groups[group] = {
            key: round(float(np.mean([m[key] for m in members])), 4)
            for key in ("psnr", "ssim", "blurred_psnr", "blurred_ssim")
        }
        groups[group]["gain_db"] = round(groups[group]["psnr"] - groups[group]["blurred_psnr"], 4)
    return groups


def format_table(families: dict[str, dict[str, Any]], title: str) -> str:
    """A fixed-width per-family table for the console."""
    lines = [title, f"{'family':<12} {'held-out':>8} {'n':>4} {'PSNR':>7} {'blurred':>8} {'gain':>6} {'SSIM':>6}"]
    for name, row in families.items():
        gain = row["psnr"] - row["blurred_psnr"]
        lines.append(
            f"{name:<12} {'yes' if row['held_out'] else 'no':>8} {row['n']:>4} {row['psnr']:>7.2f} "
            f"{row['blurred_psnr']:>8.2f} {gain:>+6.2f} {row['ssim']:>6.3f}"
        )
    for group, values in group_means(families).items():
        lines.append(
            f"{group:<12} {'':>8} {'':>4} {values['psnr']:>7.2f} {values['blurred_psnr']:>8.2f} "
            f"{values['gain_db']:>+6.2f} {values['ssim']:>6.3f}"
        )
    return "\n".join(lines)


def image_row(blurred: torch.Tensor, restored: torch.Tensor, sharp: torch.Tensor) -> np.ndarray:
    """blurred | restored | sharp side by side, (H, 3W, 3) uint8."""
    tiles = torch.cat([blurred[0], restored[0], sharp[0]], dim=-1)
    return (tiles.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
