"""Cross-dataset evaluation: a network scored on the test pairs of every ingested paired dataset, on whole images,
with each dataset's published protocol.

Every test image is restored at full resolution (GoPro's are 1280×720: centre crops would inflate PSNR), whole or,
when a side is longer than ``evaluate.tile_px``, in overlapping tiles blended seamlessly — the tiling of
``bdirnet deblur`` (:func:`bdirnet.deblur.restore`). The restored and the blurred images are then scored with the
dataset's protocol (:data:`bdirnet.protocols.DATASET_PROTOCOLS`: GoPro/HIDE PSNR on 8-bit RGB and MATLAB's SSIM,
RealBlur's ECC-aligned masked scores, Köhler's best frame); a generic folder gets our PSNR/SSIM
(:data:`bdirnet.metrics.METRICS`). Each dataset's summary names its protocol and a headline PSNR and SSIM, which the
robustness report puts in one column per dataset.

Example:
    >>> from bdirnet.paired_eval import HEADLINES
    >>> HEADLINES["realblur"]
    ('realblur_psnr', 'realblur_ssim')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bdirnet.config import EvaluateConfig
from bdirnet.deblur import restore
from bdirnet.images import decode_png, to_tensor
from bdirnet.metrics import score
from bdirnet.paired import PairRecord
from bdirnet.protocols import DATASET_PROTOCOLS, DIGITS, PROTOCOLS, score_protocol

GENERIC = "generic"
HEADLINES: dict[str, tuple[str, str]] = {
    "gopro_hide": ("psnr_rgb8", "ssim_matlab"),
    "realblur": ("realblur_psnr", "realblur_ssim"),
    "kohler": ("kohler_psnr", "kohler_ssim"),
    GENERIC: ("psnr", "ssim"),
}
"""The PSNR and SSIM of each protocol that the report's cross-dataset columns show."""


def protocol_of(dataset: str) -> str:
    """The protocol a paired dataset is scored with: its published one, else ``generic`` (our PSNR/SSIM)."""
    return DATASET_PROTOCOLS.get(dataset, GENERIC)


def paired_test_sets(paired: Mapping[str, list[PairRecord]], max_images: int = 0) -> dict[str, list[PairRecord]]:
    """The test pairs of each dataset that has any, sorted by pair id (the first ``max_images`` when > 0)."""
    out = {}
    for dataset in sorted(paired):
        records = sorted((r for r in paired[dataset] if r.split == "test"), key=lambda r: r.pair_id)
        if records:
            out[dataset] = records[:max_images] if max_images else records
    return out


def _load(root: Path, file: str) -> Tensor:
    path = root / file
    try:
        return to_tensor(decode_png(path.read_bytes()))
    except OSError as error:
        raise FileNotFoundError(f"{path}: cannot read an ingested paired image ({error.strerror or error})") from None


def score_pair(protocol: str, image: Tensor, sharp: list[Tensor]) -> dict[str, float]:
    """Every metric of ``protocol`` for one image against its sharp image(s) (Köhler: every recorded frame)."""
    if protocol == GENERIC:
        return score(image, sharp[0])
    if protocol == "kohler":
        return score_protocol(protocol, image, torch.stack(sharp, dim=1))
    return score_protocol(protocol, image, sharp[0])


def evaluate_dataset(
    network: nn.Module | Callable[[Tensor], Tensor],
    root: Path,
    dataset: str,
    records: list[PairRecord],
    config: EvaluateConfig,
) -> dict[str, Any]:
    """Restore every pair of ``records`` at full resolution and score it and its blurred input with the dataset's
    protocol. Files are relative to ``root`` (``data/ingested/paired``).

    Returns ``protocol``, ``metrics`` (its metric names), ``headline`` (the PSNR and SSIM names), ``n``, the mean of
    every metric for the restored (``<metric>``) and blurred (``blurred_<metric>``) images, ``psnr``/``ssim`` and
    ``blurred_psnr``/``blurred_ssim`` (the headline ones), and ``images``: pair id -> every metric (restored) and
    ``blurred_<metric>``.
    """
    protocol = protocol_of(dataset)
    names = PROTOCOLS[protocol][0] if protocol in PROTOCOLS else ("psnr", "ssim")
    images: dict[str, dict[str, float]] = {}
    for record in records:
        blurred = _load(root, record.blurred)
        sharp = [_load(root, file) for file in record.sharp]
        longest = max(blurred.shape[-2:])
        if isinstance(network, nn.Module):
            tile = config.tile_px if longest > config.tile_px else None
            restored = restore(network, blurred, tile=tile, overlap=config.overlap_px)
        else:
            with torch.no_grad():
                restored = network(blurred).clamp(0, 1)
        try:
            mine, theirs = score_pair(protocol, restored, sharp), score_pair(protocol, blurred, sharp)
        except ValueError as error:
            raise ValueError(f"{dataset}/{record.pair_id}: {error}") from None
        images[record.pair_id] = mine | {f"blurred_{k}": v for k, v in theirs.items()}
    summary: dict[str, Any] = {"protocol": protocol, "metrics": list(names), "headline": list(HEADLINES[protocol])}
    summary["n"] = len(images)
    for name in names:
        for key in (name, f"blurred_{name}"):
            summary[key] = round(float(np.mean([v[key] for v in images.values()])), DIGITS.get(name, 4))
    psnr_name, ssim_name = HEADLINES[protocol]
    summary |= {"psnr": summary[psnr_name], "ssim": summary[ssim_name]}
    summary |= {"blurred_psnr": summary[f"blurred_{psnr_name}"], "blurred_ssim": summary[f"blurred_{ssim_name}"]}
    summary["images"] = {pid: {k: round(v, 5) for k, v in values.items()} for pid, values in images.items()}
    return summary


def evaluate_paired(
    network: nn.Module | Callable[[Tensor], Tensor],
    root: Path,
    paired: Mapping[str, list[PairRecord]],
    config: EvaluateConfig,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_dataset` for every paired dataset with test pairs (dataset name -> summary)."""
    sets = paired_test_sets(paired, config.paired_max_images)
    return {dataset: evaluate_dataset(network, root, dataset, records, config) for dataset, records in sets.items()}
