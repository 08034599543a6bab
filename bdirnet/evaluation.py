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

    def summary(self, per_image: bool = False) -> dict[str, Any]:
        """Mean and std over images; with ``per_image``, also ``images``: pair id -> [PSNR, SSIM]."""

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
        } | (
            {
                "images": {
                    i: [round(p, 4), round(q, 5)] for i, p, q in zip(self.pair_ids, self.psnr, self.ssim, strict=True)
                }
            }
            if per_image
            else {}
        )


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


def load_png(path: Path) -> torch.Tensor:
    """A PNG/JPEG file as ``(1, 3, H, W)`` float in [0, 1] (grayscale repeated to RGB), naming the file on error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            image = np.asarray(handle.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: cannot read the image ({error})") from None
    return _to_tensor(image)


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
