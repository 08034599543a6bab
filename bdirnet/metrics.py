"""Per-image PSNR and SSIM on RGB images in [0, 1] (deblurring convention: RGB, no border crop).

Both return one value per image, shape ``(N,)``; average them yourself (``kornia.metrics.psnr`` averages the
MSE over the whole batch, which is not a per-image mean). SSIM follows Wang et al. 2004 as
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=-1)`` computes it: an 11×11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
the SSIM map averaged over the positions where the window fits, then over channels.

Example:
    >>> import torch
    >>> sharp = torch.rand(2, 3, 32, 32)
    >>> psnr(sharp.clamp(0.1, 0.9), sharp).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_WINDOW_PX = 11
SSIM_SIGMA_PX = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

Metric = Callable[[Tensor, Tensor], Tensor]


def _check_pair(restored: Tensor, sharp: Tensor, where: str) -> None:
    if restored.shape != sharp.shape:
        raise ValueError(f"{where}: restored {tuple(restored.shape)} and sharp {tuple(sharp.shape)} differ in shape")
    if restored.ndim != 4:
        raise ValueError(f"{where}: expected (N, C, H, W) batches, got {tuple(restored.shape)}")


def psnr(restored: Tensor, sharp: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, one value per image.

    Args:
        restored: :math:`(N, C, H, W)`, values in ``[0, data_range]``.
        sharp: the reference, same shape.
        data_range: the peak value (1 for [0, 1] images).

    Returns:
        :math:`(N,)` float64 tensor; ``inf`` where the images are identical.
    """
    _check_pair(restored, sharp, "psnr")
    mse = (restored.double() - sharp.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(device: torch.device, radius: int = SSIM_WINDOW_PX // 2, sigma: float = SSIM_SIGMA_PX) -> Tensor:
    """The normalised 1-D Gaussian ``(2 radius + 1,)`` float64 taps of the SSIM window."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    window = torch.exp(-(x**2) / (2 * sigma**2))
    return window / window.sum()


def ssim_map(restored: Tensor, sharp: Tensor, data_range: float = 1.0) -> Tensor:
    """The SSIM of every channel at every position where the 11×11 window fits (no padding).

    Args:
        restored: :math:`(N, C, H, W)` with H, W >= 11, values in ``[0, data_range]``.
        sharp: the reference, same shape.
        data_range: the peak value (1 for [0, 1] images).

    Returns:
        :math:`(N, C, H - 10, W - 10)` float64 tensor; position ``(i, j)`` is the window centred at ``(i + 5, j + 5)``.
    """
    _check_pair(restored, sharp, "ssim")
    n, c, h, w = restored.shape
    if h < SSIM_WINDOW_PX or w < SSIM_WINDOW_PX:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW_PX}×{SSIM_WINDOW_PX}, got {h}×{w}")
    x = restored.double().reshape(n * c, 1, h, w)
    y = sharp.double().reshape(n * c, 1, h, w)
    window = gaussian_window(x.device)
    row, col = window.view(1, 1, 1, -1), window.view(1, 1, -1, 1)

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(image, row), col)  # "valid": only positions where the window fits

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_values = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_values.reshape(n, c, h - SSIM_WINDOW_PX + 1, w - SSIM_WINDOW_PX + 1)


def ssim(restored: Tensor, sharp: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity, one :math:`(N,)` float64 value per image: the mean of :func:`ssim_map` over channels
    and valid window positions (same arguments)."""
    return ssim_map(restored, sharp, data_range).flatten(1).mean(dim=1)


METRICS: dict[str, Metric] = {"psnr": psnr, "ssim": ssim}
"""Every metric of the reports, by name: ``fn(restored, sharp) -> (N,)``, higher is better. A new metric is one
entry here (and its rounding in :data:`DIGITS`); evaluation, reports and the robustness matrix read this map."""

DIGITS: dict[str, int] = {"psnr": 4, "ssim": 5}
"""Decimal places a metric is stored with in the JSON reports."""

GROUPS: tuple[str, ...] = ("in_family", "held_out", "no_blur")
"""The family groups: the training families, the held-out families, and ``none`` (no blur: "do no harm")."""


def family_group(family: str, held_out_families: Sequence[str]) -> str:
    """The group of a family: ``no_blur`` for ``none``, ``paired`` for the real pairs' slot of validation
    (:data:`bdirnet.pairs.VAL_SLOTS`), ``held_out`` for a held-out family, else ``in_family``."""
    if family == "none":
        return "no_blur"
    if family == "paired":
        return "paired"
    return "held_out" if family in held_out_families else "in_family"


def row_group(row: Mapping[str, Any]) -> str:
    """The group of a family row of a report (``group``; reports from before it: by ``held_out``)."""
    return str(row.get("group") or ("held_out" if row["held_out"] else "in_family"))


def score(restored: Tensor, sharp: Tensor) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one image pair (batch of one)."""
    if restored.shape[0] != 1:
        raise ValueError(f"score: expected a batch of one image, got {restored.shape[0]}")
    return {name: float(metric(restored, sharp)[0]) for name, metric in METRICS.items()}


def rounded(name: str, value: float) -> float:
    """``value`` of a metric key (``psnr``, ``blurred_ssim``, ``psnr_std``, ...) at that metric's precision."""
    base = next((m for m in METRICS if name == m or name.startswith(f"{m}_") or name.endswith(f"_{m}")), None)
    return round(float(value), DIGITS.get(base or "", 4))


def group_means(families: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """The mean of each of ``keys`` over the families of each group (:data:`GROUPS`, :func:`row_group`), rounded
    per metric; a group without families is left out. With ``psnr`` and ``blurred_psnr`` among the keys,
    ``gain_db`` is their difference."""
    groups: dict[str, dict[str, float]] = {}
    for group in GROUPS:
        members = [row for row in families.values() if row_group(row) == group]
        if not members:
            continue
        means = {key: rounded(key, sum(float(m[key]) for m in members) / len(members)) for key in keys}
        if "psnr" in means and "blurred_psnr" in means:
            means["gain_db"] = round(means["psnr"] - means["blurred_psnr"], 4)
        groups[group] = means
    return groups
