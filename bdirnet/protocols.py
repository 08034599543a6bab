"""The paired benchmarks' metric protocols as published, each a named metric ``fn(restored, sharp) -> (N,)``.

Inputs are float RGB batches ``(N, 3, H, W)`` in [0, 1]; every protocol first rounds both images to 8 bits, as the
published scripts score the saved 8-bit PNGs. Higher is better for every metric.

- **GoPro / HIDE** (``evaluate_GOPRO_HIDE.m`` of MPRNet/Restormer: MATLAB ``psnr(uint8, uint8)`` and
  ``ssim(uint8, uint8)`` on the full RGB image, no border crop). ``psnr_rgb8``: PSNR of the 8-bit RGB images.
  ``ssim_matlab``: MATLAB's ``ssim`` on an H×W×3 array filters it as a *volume*: a 3-D Gaussian window (σ 1.5 px in
  all three axes, 11×11×11, ``imgaussfilt3`` with replicate padding, so the channel axis is blurred too), C1 =
  (0.01·255)², C2 = (0.03·255)², the SSIM map averaged over all H×W×3 positions. It is higher than the per-channel
  SSIM on the same pair (mmagic reports 0.961 vs 0.9496 for Restormer on GoPro). ``ssim_skimage``: our usual SSIM
  (:func:`bdirnet.metrics.ssim`, per channel, equal to scikit-image's) on the 8-bit images, labelled as such.
- **RealBlur** (``evaluation_RealBlur_ecc.py``): the restored image is scaled by the least-squares factor
  ``Σxz / Σz²`` towards the sharp one, aligned to it by ECC (``cv2.findTransformECC``, homography, 100 iterations,
  Gaussian filter size 5, on gray images), warped (bicubic, reflected borders); the valid-pixel mask is the warped
  image of ones (nearest, zero outside). ``realblur_psnr``: MSE summed over the masked images divided by the mask's
  sum. ``realblur_ssim``: the SSIM map where the 11×11 window fits, times the mask, summed per channel over the
  mask's sum, then the mean over channels.
- **Köhler** (Köhler et al. 2012): ``sharp`` holds every sharp frame recorded along the camera shake,
  ``(N, F, 3, H, W)``; the restored image is scaled and aligned as for RealBlur but by a translation only, scored
  against every frame, and the best score is kept (``kohler_psnr``, ``kohler_ssim``, each its own best frame).

:data:`PROTOCOL_METRICS` maps every name to its function; :data:`PROTOCOLS` groups them per benchmark and
:func:`score_protocol` scores a pair with one alignment shared by a protocol's metrics.

Example:
    >>> import torch
    >>> sharp = torch.rand(1, 3, 32, 32)
    >>> round(float(ssim_matlab(sharp, sharp)[0]), 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bdirnet.images import one_line, to_uint8
from bdirnet.metrics import SSIM_K1, SSIM_K2, SSIM_WINDOW_PX, Metric, gaussian_window, psnr, ssim, ssim_map

__all__ = [
    "DATASET_PROTOCOLS",
    "PROTOCOLS",
    "PROTOCOL_METRICS",
    "Alignment",
    "align",
    "kohler_psnr",
    "kohler_ssim",
    "masked_psnr",
    "masked_ssim",
    "psnr_rgb8",
    "realblur_psnr",
    "realblur_ssim",
    "score_protocol",
    "ssim_matlab",
    "ssim_matlab_map",
    "ssim_skimage",
]

MATLAB_SSIM_SIGMA_PX = 1.5
MATLAB_SSIM_RADIUS_PX = 5  # ceil(3 σ): MATLAB's ssim filter size 2·ceil(3σ) + 1 = 11
ECC_ITERATIONS = 100
ECC_GAUSSIAN_PX = 5


def _rgb8(images: Tensor) -> Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> the 8-bit images (:func:`bdirnet.images.to_uint8`) as float64 in [0, 255]."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).to(images.device, torch.float64)


def _check(restored: Tensor, sharp: Tensor, where: str) -> None:
    if restored.ndim != 4 or restored.shape[1] != 3:
        raise ValueError(f"{where}: expected restored (N, 3, H, W) RGB batches, got {tuple(restored.shape)}")
    if sharp.shape != restored.shape:
        raise ValueError(f"{where}: restored {tuple(restored.shape)} and sharp {tuple(sharp.shape)} differ in shape")


# --------------------------------------------------------------------------------------------- GoPro / HIDE
def psnr_rgb8(restored: Tensor, sharp: Tensor) -> Tensor:
    """PSNR of the 8-bit RGB images, full image, peak 255 (MATLAB ``psnr`` on uint8), one value per image."""
    _check(restored, sharp, "psnr_rgb8")
    return psnr(_rgb8(restored), _rgb8(sharp), data_range=255.0)


def _channel_mixing(window: Tensor, channels: int) -> Tensor:
    """The Gaussian filter along the channel axis with replicate padding, as a ``(C, C)`` matrix: output channel
    ``c`` takes ``window[k]`` of input channel ``clamp(c + k - r, 0, C - 1)`` (for 3 channels and radius 5, most of
    the weight of the padded taps lands on the edge channels)."""
    r = MATLAB_SSIM_RADIUS_PX
    mixing = torch.zeros(channels, channels, dtype=window.dtype, device=window.device)
    for out in range(channels):
        for tap in range(2 * r + 1):
            mixing[out, min(max(out + tap - r, 0), channels - 1)] += window[tap]
    return mixing


def _volume_blur(images: Tensor, window: Tensor, mixing: Tensor) -> Tensor:
    """MATLAB's ``imgaussfilt3`` (replicate padding) of ``(N, C, H, W)`` volumes: the separable 3-D filter as a 2-D
    filter of every channel followed by the channel filter's ``(C, C)`` matrix (the same linear map, without
    padding the channel axis five deep)."""
    n, c, h, w = images.shape
    r = MATLAB_SSIM_RADIUS_PX
    planes = F.pad(images.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate")
    planes = F.conv2d(F.conv2d(planes, window.view(1, 1, 1, -1)), window.view(1, 1, -1, 1)).reshape(n, c, h, w)
    return torch.einsum("oc,nchw->nohw", mixing, planes)


def ssim_matlab_map(restored: Tensor, sharp: Tensor) -> Tensor:
    """MATLAB ``ssim``'s map of two 8-bit H×W×3 images: ``(N, 3, H, W)`` float64 (see the module doc)."""
    _check(restored, sharp, "ssim_matlab")
    x, y = _rgb8(restored), _rgb8(sharp)
    window = gaussian_window(x.device, MATLAB_SSIM_RADIUS_PX, MATLAB_SSIM_SIGMA_PX)
    mixing = _channel_mixing(window, x.shape[1])

    def blur(images: Tensor) -> Tensor:
        return _volume_blur(images, window, mixing)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * 255.0) ** 2, (SSIM_K2 * 255.0) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_matlab(restored: Tensor, sharp: Tensor) -> Tensor:
    """MATLAB ``ssim`` on the 8-bit RGB images as a volume (3-D Gaussian window), one value per image."""
    return ssim_matlab_map(restored, sharp).flatten(1).mean(dim=1)


def ssim_skimage(restored: Tensor, sharp: Tensor) -> Tensor:
    """Our per-channel SSIM (:func:`bdirnet.metrics.ssim`, equal to scikit-image's) on the 8-bit images."""
    _check(restored, sharp, "ssim_skimage")
    return ssim(_rgb8(restored) / 255.0, _rgb8(sharp) / 255.0)


# --------------------------------------------------------------------------------------------- RealBlur / Köhler
@dataclass(frozen=True)
class Alignment:
    """A restored image scaled and warped onto its sharp reference (``(H, W, 3)`` float32 in [0, 1]).

    ``aligned`` and ``reference`` are zero outside the valid-pixel ``mask`` (1 where the warped image has pixels);
    ``warp`` maps reference coordinates to restored ones (2×3 for a translation, 3×3 for a homography).
    """

    aligned: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    warp: np.ndarray


def align(restored: np.ndarray, sharp: np.ndarray, motion: int = cv2.MOTION_HOMOGRAPHY) -> Alignment:
    """Scale ``restored`` by the least-squares factor towards ``sharp``, then align it by ECC (``motion``: a
    ``cv2.MOTION_*``; 100 iterations, Gaussian filter size 5) and mask the pixels the warp leaves out.

    Args:
        restored: ``(H, W, 3)`` float32 in [0, 1].
        sharp: the reference, same shape.
        motion: ``cv2.MOTION_HOMOGRAPHY`` (RealBlur) or ``cv2.MOTION_TRANSLATION`` (Köhler).

    Raises:
        ValueError: ECC did not converge (e.g. an image without structure, or unrelated images).
    """
    # float32 arithmetic, as in the published script: ECC run for a fixed 100 iterations amplifies any difference.
    restored, sharp = restored.astype(np.float32, copy=False), sharp.astype(np.float32, copy=False)
    scaled = (np.sum(sharp * restored) / np.sum(restored * restored)) * restored
    warp = np.eye(3, 3, dtype=np.float32) if motion == cv2.MOTION_HOMOGRAPHY else np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, 0)
    try:
        _, warp = cv2.findTransformECC(
            cv2.cvtColor(sharp, cv2.COLOR_RGB2GRAY),
            cv2.cvtColor(scaled, cv2.COLOR_RGB2GRAY),
            warp,
            motion,
            criteria,
            None,
            ECC_GAUSSIAN_PX,
        )
    except cv2.error as error:
        raise ValueError(f"ECC alignment failed ({one_line(error)})") from None
    height, width = sharp.shape[:2]
    warp_image = cv2.warpPerspective if motion == cv2.MOTION_HOMOGRAPHY else cv2.warpAffine
    warped = warp_image(
        scaled, warp, (width, height), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
    )
    mask = warp_image(
        np.ones_like(scaled),
        warp,
        (width, height),
        flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return Alignment(aligned=warped * mask, reference=sharp * mask, mask=mask, warp=warp)


def masked_psnr(alignment: Alignment) -> float:
    """PSNR over the valid pixels: the squared error summed over the masked images, divided by the mask's sum."""
    error = np.sum((alignment.reference.astype(np.float64) - alignment.aligned) ** 2) / np.sum(alignment.mask)
    return float(10.0 * np.log10(1.0 / error))


def masked_ssim(alignment: Alignment) -> float:
    """SSIM over the valid pixels: the SSIM map where the window fits, times the mask, per-channel mean over the
    mask, then the mean over channels."""
    aligned = torch.from_numpy(alignment.aligned).permute(2, 0, 1)[None]
    reference = torch.from_numpy(alignment.reference).permute(2, 0, 1)[None]
    values = ssim_map(aligned, reference)[0].numpy()  # (3, H - 10, W - 10)
    pad = SSIM_WINDOW_PX // 2
    mask = alignment.mask[pad:-pad, pad:-pad].transpose(2, 0, 1).astype(np.float64)
    per_channel = (values * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1.0)
    return float(per_channel.mean())


def _float_images(batch: Tensor) -> list[np.ndarray]:
    """``(N, 3, H, W)`` in [0, 1] -> ``(H, W, 3)`` float32 arrays of the 8-bit images, as the scripts read PNGs."""
    return [np.ascontiguousarray(image, dtype=np.float32) / np.float32(255.0) for image in to_uint8(batch)]


def _realblur(restored: Tensor, sharp: Tensor) -> dict[str, Tensor]:
    _check(restored, sharp, "realblur")
    scores: dict[str, list[float]] = {"realblur_psnr": [], "realblur_ssim": []}
    for z, x in zip(_float_images(restored), _float_images(sharp), strict=True):
        alignment = align(z, x, cv2.MOTION_HOMOGRAPHY)
        scores["realblur_psnr"].append(masked_psnr(alignment))
        scores["realblur_ssim"].append(masked_ssim(alignment))
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in scores.items()}


def realblur_psnr(restored: Tensor, sharp: Tensor) -> Tensor:
    """RealBlur's PSNR: intensity-scaled, ECC-aligned (homography), on the valid pixels; one value per image."""
    return _realblur(restored, sharp)["realblur_psnr"]


def realblur_ssim(restored: Tensor, sharp: Tensor) -> Tensor:
    """RealBlur's SSIM: intensity-scaled, ECC-aligned (homography), on the valid pixels; one value per image."""
    return _realblur(restored, sharp)["realblur_ssim"]


def _kohler(restored: Tensor, sharp: Tensor) -> dict[str, Tensor]:
    frames = sharp.unsqueeze(1) if sharp.ndim == 4 else sharp
    if frames.ndim != 5 or frames.shape[0] != restored.shape[0] or frames.shape[2:] != restored.shape[1:]:
        raise ValueError(
            f"kohler: expected sharp frames (N, F, 3, H, W) matching restored {tuple(restored.shape)}, "
            f"got {tuple(sharp.shape)}"
        )
    _check(restored, frames[:, 0], "kohler")
    scores: dict[str, list[float]] = {"kohler_psnr": [], "kohler_ssim": []}
    for z, image_frames in zip(_float_images(restored), frames, strict=True):
        best_psnr, best_ssim, failures = -np.inf, -np.inf, []
        for x in _float_images(image_frames):
            try:
                alignment = align(z, x, cv2.MOTION_TRANSLATION)
            except ValueError as error:
                failures.append(str(error))
                continue
            best_psnr = max(best_psnr, masked_psnr(alignment))
            best_ssim = max(best_ssim, masked_ssim(alignment))
        if not np.isfinite(best_ssim):
            raise ValueError(f"kohler: no sharp frame could be aligned ({failures[0]})")
        scores["kohler_psnr"].append(best_psnr)
        scores["kohler_ssim"].append(best_ssim)
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in scores.items()}


def kohler_psnr(restored: Tensor, sharp: Tensor) -> Tensor:
    """Köhler's PSNR: the best over the sharp frames ``(N, F, 3, H, W)``, after scaling and translation."""
    return _kohler(restored, sharp)["kohler_psnr"]


def kohler_ssim(restored: Tensor, sharp: Tensor) -> Tensor:
    """Köhler's SSIM: the best over the sharp frames ``(N, F, 3, H, W)``, after scaling and translation."""
    return _kohler(restored, sharp)["kohler_ssim"]


PROTOCOL_METRICS: dict[str, Metric] = {
    "psnr_rgb8": psnr_rgb8,
    "ssim_matlab": ssim_matlab,
    "ssim_skimage": ssim_skimage,
    "realblur_psnr": realblur_psnr,
    "realblur_ssim": realblur_ssim,
    "kohler_psnr": kohler_psnr,
    "kohler_ssim": kohler_ssim,
}
"""Every protocol metric by name, ``fn(restored, sharp) -> (N,)`` like :data:`bdirnet.metrics.METRICS` (Köhler's
``sharp`` is ``(N, F, 3, H, W)``)."""

DIGITS: dict[str, int] = {name: 4 if "psnr" in name else 5 for name in PROTOCOL_METRICS}

_Scorer = Callable[[Tensor, Tensor], dict[str, Tensor]]


def _each(*names: str) -> _Scorer:
    def scorer(restored: Tensor, sharp: Tensor) -> dict[str, Tensor]:
        return {name: PROTOCOL_METRICS[name](restored, sharp) for name in names}

    return scorer


PROTOCOLS: dict[str, tuple[tuple[str, ...], _Scorer]] = {
    "gopro_hide": (("psnr_rgb8", "ssim_matlab", "ssim_skimage"), _each("psnr_rgb8", "ssim_matlab", "ssim_skimage")),
    "realblur": (("realblur_psnr", "realblur_ssim"), _realblur),
    "kohler": (("kohler_psnr", "kohler_ssim"), _kohler),
}
"""Each benchmark protocol: its metric names and a scorer computing them all at once (one alignment per pair)."""

DATASET_PROTOCOLS: dict[str, str] = {
    "gopro": "gopro_hide",
    "hide": "gopro_hide",
    "realblur_j": "realblur",
    "realblur_r": "realblur",
    "kohler": "kohler",
}
"""The protocol of each paired dataset (:mod:`bdirnet.paired` names); a generic folder uses :data:`METRICS`."""


def score_protocol(protocol: str, restored: Tensor, sharp: Tensor) -> dict[str, float]:
    """Every metric of ``protocol`` (a key of :data:`PROTOCOLS`) for one pair (batch of one).

    Raises:
        ValueError: an unknown protocol, a batch of more than one, or an alignment that failed.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"score_protocol: unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    if restored.shape[0] != 1:
        raise ValueError(f"score_protocol: expected a batch of one image, got {restored.shape[0]}")
    _, scorer = PROTOCOLS[protocol]
    return {name: float(values[0]) for name, values in scorer(restored, sharp).items()}
