"""Classical non-blind references with the *true* kernel from a pair's record (oracles, not blind methods).

- :func:`wiener_deconvolve`: Wiener deconvolution in the Fourier domain, reflect-padded to tame the border,
  with a constant noise-to-signal ``balance``.
- :func:`richardson_lucy`: Richardson-Lucy iterations (``skimage.restoration.richardson_lucy``) per channel.
- :func:`oracle_restore`: either of them for one pair, given its degradation record. For a spatially varying
  family (``nonuniform``) it deconvolves with every component kernel and blends with the pair's own weight maps —
  an oracle that knows the blur field.

They bound what any method can gain on the uniform families when the kernel is known exactly; learned
blind deblurring is compared against them, not judged by them.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from bdirnet.degrade import blur_components, kernel_from_params


def _psf_to_otf(kernel: Tensor, height: int, width: int) -> Tensor:
    """The kernel zero-padded to (H, W) with its centre at the origin, in the Fourier domain."""
    k = kernel.shape[-1]
    padded = kernel.new_zeros(height, width)
    padded[:k, :k] = kernel
    padded = torch.roll(padded, shifts=(-(k // 2), -(k // 2)), dims=(0, 1))
    return torch.fft.rfft2(padded)


def wiener_deconvolve(blurred: Tensor, kernel: Tensor, balance: float = 3e-3) -> Tensor:
    """Wiener deconvolution of ``(N, C, H, W)`` images with one known ``(k, k)`` kernel (sum 1).

    The images are mirrored into a 2H×2W tile first (the blur was applied with a mirrored border, and the tile's
    periodic extension has no edge to ring on); the result is cropped back and clipped to [0, 1]. The kernel
    must be larger than neither side of the image.
    """
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"wiener_deconvolve: expected a square (k, k) kernel, got {tuple(kernel.shape)}")
    height, width = blurred.shape[-2:]
    # Mirror the image into a 2H×2W tile whose periodic extension is continuous (no wrap-around edge for the
    # FFT to ring on), deconvolve, keep the original quarter.
    image = blurred.double()
    row = torch.cat([image, image.flip(-1)], dim=-1)
    tiled = torch.cat([row, row.flip(-2)], dim=-2)
    otf = _psf_to_otf(kernel.double().to(blurred.device), 2 * height, 2 * width)
    spectrum = torch.fft.rfft2(tiled)
    restored = torch.fft.irfft2(spectrum * otf.conj() / (otf.abs() ** 2 + balance), s=(2 * height, 2 * width))
    return restored[..., :height, :width].clamp(0, 1).to(blurred.dtype)


def richardson_lucy(blurred: Tensor, kernel: Tensor, iterations: int = 30) -> Tensor:
    """Richardson-Lucy deconvolution (scikit-image) of ``(N, C, H, W)`` images with one known kernel."""
    from skimage.restoration import richardson_lucy as skimage_rl

    psf = kernel.double().cpu().numpy()
    images = blurred.double().cpu().numpy()
    pad = psf.shape[0]  # mirror border: scikit-image convolves with zeros outside, which darkens the edges
    out = np.empty_like(images)
    for n in range(images.shape[0]):
        for c in range(images.shape[1]):
            padded = np.pad(images[n, c], pad, mode="symmetric")
            out[n, c] = skimage_rl(padded, psf, num_iter=iterations, clip=True)[pad:-pad, pad:-pad]
    return torch.from_numpy(out).to(blurred.device, blurred.dtype)


Method = Literal["wiener", "richardson_lucy"]


def oracle_restore(blurred: Tensor, params: dict[str, Any], method: Method = "wiener") -> Tensor:
    """Restore one pair with the true kernel(s) of its record ``params`` (see module docstring)."""

    def deconvolve(images: Tensor, kernel: Tensor) -> Tensor:
        kernel = kernel.flip(-2, -1)  # kornia's filter2d correlates: as a convolution the kernel is flipped
        if method == "wiener":
            return wiener_deconvolve(images, kernel)
        return richardson_lucy(images, kernel)

    height, width = blurred.shape[-2:]
    restored: Tensor | None = None
    for component, weight in blur_components(params, height, width, blurred.device):
        part = deconvolve(blurred, kernel_from_params(component))
        part = part if weight is None else weight * part
        restored = part if restored is None else restored + part
    assert restored is not None
    return restored
