"""The blur zoo: seeded, batched synthetic degradations built on kornia.

Every family is a pure function of (sharp batch, per-sample parameters) -> blurred batch. Parameters are drawn
with ``numpy.random.default_rng([seed, crc32(family)])`` and returned as plain data (JSON-ready dicts), so any
pair can be rebuilt from its record with :func:`apply_degradation`, and any uniform kernel with
:func:`kernel_from_params` (the Wiener / Richardson-Lucy oracles use that).

Families (DESIGN.md §2):

- ``motion``: linear motion, length 7-31 px, any angle, uneven speed (``kornia.filters.get_motion_kernel2d``).
- ``gaussian``: isotropic Gaussian, sigma 0.5-3 px (``kornia.filters.get_gaussian_kernel2d``).
- ``shake``: camera-shake trajectories (random walk with inertia, Boracchi & Foi 2012 style), rasterised.
- ``defocus``: anti-aliased disk, radius 2-8 px.
- ``nonuniform``: two kernels of other families blended by a smooth random mask (spatially varying).

All kernels are applied with ``kornia.filters.filter2d`` (one kernel per sample), then sensor noise
(Gaussian, sigma <= ``noise_sigma_max``), optional JPEG (``kornia.enhance.jpeg_codec_differentiable``) and
clipping to [0, 1]. The operations run on the device of the input batch; the parameters and kernels are
computed on the CPU, so a seed gives the same kernels on every device.

Example:
    >>> import torch
    >>> sharp = torch.rand(2, 3, 64, 64)
    >>> blurred, params = degrade(sharp, "motion", seed=0)
    >>> blurred.shape, params[0]["family"]
    (torch.Size([2, 3, 64, 64]), 'motion')
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Any]


def family_rng(seed: int, name: str) -> np.random.Generator:
    """The one random generator for ``(seed, name)``: independent streams per name, never the global RNG."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _odd(value: float) -> int:
    size = round(value)
    return size if size % 2 == 1 else size + 1


# --------------------------------------------------------------------------------------------- parameter draws
def _draw_motion(rng: np.random.Generator) -> Params:
    return {
        "kernel_px": _odd(rng.uniform(7, 31)),
        "angle_deg": float(rng.uniform(0.0, 180.0)),
        "direction": float(rng.uniform(-1.0, 1.0)),
    }


def _draw_gaussian(rng: np.random.Generator) -> Params:
    return {"sigma_px": float(rng.uniform(0.5, 3.0))}


def _draw_shake(rng: np.random.Generator) -> Params:
    return {"kernel_px": _odd(rng.uniform(9, 31)), "trajectory_seed": int(rng.integers(2**31))}


def _draw_defocus(rng: np.random.Generator) -> Params:
    return {"radius_px": float(rng.uniform(2.0, 8.0))}


def _draw_nonuniform(rng: np.random.Generator) -> Params:
    first, second = rng.choice(len(UNIFORM_FAMILIES), size=2, replace=False)
    name_a, name_b = UNIFORM_FAMILIES[int(first)], UNIFORM_FAMILIES[int(second)]
    return {
        "kernel_a": {"family": name_a, **BLUR_FAMILIES[name_a].draw(rng)},
        "kernel_b": {"family": name_b, **BLUR_FAMILIES[name_b].draw(rng)},
        "mask_cells": int(rng.integers(2, 5)),
        "mask_seed": int(rng.integers(2**31)),
    }


def sample_params(
    family: str,
    num_samples: int,
    seed: int,
    *,
    noise_sigma_max: float = 0.01,
    jpeg_quality_min: int = 0,
) -> list[Params]:
    """Draw the per-sample parameters of ``family`` for a batch.

    Args:
        family: one of :data:`FAMILIES`.
        num_samples: batch size N.
        seed: the study seed; the stream is ``default_rng([seed, crc32(family)])``.
        noise_sigma_max: sensor noise sigma is uniform in ``[0, noise_sigma_max]``.
        jpeg_quality_min: 0 for no JPEG, else quality uniform in ``[jpeg_quality_min, 95]``.

    Returns:
        ``num_samples`` JSON-ready dicts with ``family``, the kernel parameters, ``noise_sigma``,
        ``noise_seed`` and ``jpeg_quality`` (``None`` when off).
    """
    _check_family(family)
    rng = family_rng(seed, family)
    draw = BLUR_FAMILIES[family].draw
    params = []
    for _ in range(num_samples):
        record: Params = {"family": family, **draw(rng)}
        record["noise_sigma"] = float(rng.uniform(0.0, noise_sigma_max)) if noise_sigma_max > 0 else 0.0
        record["noise_seed"] = int(rng.integers(2**31))
        record["jpeg_quality"] = int(rng.integers(jpeg_quality_min, 96)) if jpeg_quality_min > 0 else None
        params.append(record)
    return params


# --------------------------------------------------------------------------------------------- kernels
def motion_kernel(kernel_px: int, angle_deg: float, direction: float) -> Tensor:
    """Linear motion kernel, ``(kernel_px, kernel_px)``, sum 1 (kornia's line, rotated bilinearly)."""
    kernel = kornia.filters.get_motion_kernel2d(
        kernel_px,
        torch.tensor([angle_deg], dtype=torch.float64),
        torch.tensor([direction], dtype=torch.float64),
        mode="bilinear",
    )[0]
    return kernel / kernel.sum()


def gaussian_kernel(sigma_px: float) -> Tensor:
    """Isotropic Gaussian kernel of size ``2 * ceil(3 sigma) + 1``, sum 1."""
    size = 2 * math.ceil(3.0 * sigma_px) + 1
    sigma = torch.tensor([[sigma_px, sigma_px]], dtype=torch.float64)
    kernel = kornia.filters.get_gaussian_kernel2d((size, size), sigma)[0]
    return kernel / kernel.sum()


def disk_kernel(radius_px: float, supersample: int = 16) -> Tensor:
    """Anti-aliased disk (defocus): each tap is the fraction of its pixel inside the circle; sum 1."""
    half = math.ceil(radius_px)
    size = 2 * half + 1
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = np.arange(size, dtype=np.float64)[:, None] - half + offsets[None, :]  # (size, supersample)
    ys = coords[:, None, :, None]
    xs = coords[None, :, None, :]
    inside = (ys**2 + xs**2) <= radius_px**2
    coverage = inside.mean(axis=(2, 3))
    return torch.from_numpy(coverage / coverage.sum())


def shake_trajectory(rng: np.random.Generator, length_px: float, num_steps: int = 64) -> np.ndarray:
    """A camera-shake trajectory: a random walk with inertia, centripetal pull and rare jerks.

    After Boracchi & Foi, "Modeling the performance of image restoration from motion blur" (TIP 2012).

    Returns:
        Complex positions of shape ``(num_steps,)`` whose path length is ``length_px``.
    """
    step = length_px / (num_steps - 1)
    anxiety = 0.1 * rng.uniform()
    centripetal = 0.7 * rng.uniform()
    jerk_probability = 0.2 * rng.uniform()
    gaussian_shake = 10.0 * rng.uniform()
    angle = rng.uniform(0.0, 2.0 * math.pi)
    velocity = complex(math.cos(angle), math.sin(angle)) * step
    positions = np.zeros(num_steps, dtype=np.complex128)
    for t in range(num_steps - 1):
        jerk = 0j
        if rng.uniform() < jerk_probability:
            jerk = 2.0 * velocity * np.exp(1j * (math.pi + (rng.uniform() - 0.5)))
        noise = complex(rng.standard_normal(), rng.standard_normal())
        velocity += jerk + anxiety * (gaussian_shake * noise - centripetal * positions[t]) * step
        velocity = velocity / max(abs(velocity), 1e-12) * step
        positions[t + 1] = positions[t] + velocity
    return positions


def shake_kernel(kernel_px: int, trajectory_seed: int) -> Tensor:
    """Rasterised camera-shake kernel, ``(kernel_px, kernel_px)``, sum 1, a connected path.

    The trajectory is densified to steps of at most 0.25 px and splatted bilinearly, so the support is
    8-connected.
    """
    rng = np.random.default_rng(trajectory_seed)
    positions = shake_trajectory(rng, length_px=float(kernel_px))
    positions = positions - (positions.real.min() + positions.real.max()) / 2
    positions = positions - 1j * (positions.imag.min() + positions.imag.max()) / 2
    extent = max(np.ptp(positions.real), np.ptp(positions.imag), 1e-6)
    positions = positions * min(1.0, (kernel_px - 3) / extent)
    segment_lengths = np.abs(np.diff(positions))
    samples = []
    for start, end, seg in zip(positions[:-1], positions[1:], segment_lengths, strict=True):
        count = max(2, math.ceil(seg / 0.25) + 1)
        samples.append(start + (end - start) * np.linspace(0.0, 1.0, count, endpoint=False))
    samples.append(positions[-1:])
    points = np.concatenate(samples) + (kernel_px // 2) * (1 + 1j)
    kernel = np.zeros((kernel_px, kernel_px), dtype=np.float64)
    x0 = np.floor(points.real).astype(int)
    y0 = np.floor(points.imag).astype(int)
    fx = points.real - x0
    fy = points.imag - y0
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(kernel, (y0 + dy, x0 + dx), weight)
    return torch.from_numpy(kernel / kernel.sum())


def smooth_mask(mask_cells: int, mask_seed: int, height: int, width: int, device: torch.device) -> Tensor:
    """A smooth random blend mask in [0, 1], ``(1, 1, H, W)``: a coarse random grid, upsampled bicubically."""
    rng = np.random.default_rng(mask_seed)
    grid = torch.from_numpy(rng.uniform(0.0, 1.0, size=(1, 1, mask_cells, mask_cells))).float().to(device)
    mask = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return mask.clamp(0.0, 1.0)


def _nonuniform_mixture(params: Params, height: int, width: int, device: torch.device) -> list[tuple[Params, Tensor]]:
    mask = smooth_mask(int(params["mask_cells"]), int(params["mask_seed"]), height, width, device)
    return [(params["kernel_a"], mask), (params["kernel_b"], 1.0 - mask)]


# --------------------------------------------------------------------------------------------- the families
Mixture = Callable[[Params, int, int, torch.device], list[tuple[Params, Tensor]]]


@dataclass(frozen=True)
class BlurFamily:
    """One family of the zoo, defined once: how its parameters are drawn and how its blur is built.

    A *uniform* family has ``kernel`` (a record -> its one float64 kernel, sum 1); a spatially varying family has
    ``mixture`` (a record and the image size -> ``(uniform component record, weight map (1, 1, H, W))`` pairs
    whose weights sum to 1). The application (:func:`apply_degradation`) and the deconvolution oracles
    (:mod:`bdirnet.classical`) only read these two, so a new family is one entry of :data:`BLUR_FAMILIES`.
    """

    name: str
    draw: Callable[[np.random.Generator], Params]
    kernel: Callable[[Params], Tensor] | None = None
    mixture: Mixture | None = None

    def __post_init__(self) -> None:
        if (self.kernel is None) == (self.mixture is None):
            raise ValueError(f"blur family {self.name!r}: give exactly one of kernel (uniform) or mixture")

    @property
    def uniform(self) -> bool:
        return self.kernel is not None


BLUR_FAMILIES: dict[str, BlurFamily] = {
    family.name: family
    for family in (
        BlurFamily(
            "motion",
            _draw_motion,
            kernel=lambda p: motion_kernel(int(p["kernel_px"]), float(p["angle_deg"]), float(p["direction"])),
        ),
        BlurFamily("gaussian", _draw_gaussian, kernel=lambda p: gaussian_kernel(float(p["sigma_px"]))),
        BlurFamily("shake", _draw_shake, kernel=lambda p: shake_kernel(int(p["kernel_px"]), int(p["trajectory_seed"]))),
        BlurFamily("defocus", _draw_defocus, kernel=lambda p: disk_kernel(float(p["radius_px"]))),
        BlurFamily("nonuniform", _draw_nonuniform, mixture=_nonuniform_mixture),
    )
}
"""Every blur family of the zoo by name, in a fixed order (DESIGN.md §2)."""

FAMILIES: tuple[str, ...] = tuple(BLUR_FAMILIES)
"""Every family name, in the order of :data:`BLUR_FAMILIES`."""

UNIFORM_FAMILIES: tuple[str, ...] = tuple(name for name, family in BLUR_FAMILIES.items() if family.uniform)
"""Families whose blur is one kernel for the whole image (a deconvolution oracle applies)."""


def blur_family(name: object) -> BlurFamily:
    """The family record of ``name``; a clear error for an unknown one."""
    if not isinstance(name, str) or name not in BLUR_FAMILIES:
        raise ValueError(f"unknown blur family {name!r}; expected one of {FAMILIES}")
    return BLUR_FAMILIES[name]


def kernel_from_params(params: Params) -> Tensor:
    """Rebuild the float64 kernel of a uniform-family record (``params["family"]`` in UNIFORM_FAMILIES)."""
    family = blur_family(params.get("family"))
    if family.kernel is None:
        raise ValueError(
            f"kernel_from_params: family {family.name!r} has no single kernel; expected one of {UNIFORM_FAMILIES}"
        )
    return family.kernel(params)


def blur_components(
    params: Params, height: int, width: int, device: torch.device
) -> list[tuple[Params, Tensor | None]]:
    """A record's blur as ``(uniform kernel record, weight map or None)`` pairs: one pair without weights for a
    uniform family, the family's mixture for a spatially varying one."""
    family = blur_family(params.get("family"))
    if family.mixture is None:
        return [(params, None)]
    return list(family.mixture(params, height, width, device))


# --------------------------------------------------------------------------------------------- application
def _stack_kernels(kernels: Sequence[Tensor], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Zero-pad odd square kernels to a common size and stack them: ``(N, k, k)``."""
    size = max(k.shape[-1] for k in kernels)
    padded = []
    for kernel in kernels:
        margin = (size - kernel.shape[-1]) // 2
        padded.append(F.pad(kernel, (margin, margin, margin, margin)))
    return torch.stack(padded).to(device=device, dtype=dtype)


def blur_with_kernels(images: Tensor, kernels: Sequence[Tensor]) -> Tensor:
    """Blur each image with its own kernel (``kornia.filters.filter2d``, reflect border)."""
    stacked = _stack_kernels(kernels, images.device, images.dtype)
    return kornia.filters.filter2d(images, stacked, border_type="reflect")


def _check_batch(images: Tensor, where: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: expected a batch of shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point batch in [0, 1], got dtype {images.dtype}")


def _check_family(family: str) -> None:
    blur_family(family)


def apply_degradation(sharp: Tensor, params: Sequence[Params]) -> Tensor:
    """Degrade ``sharp`` with one parameter record per sample (blur, noise, optional JPEG, clip).

    Args:
        sharp: ``(N, 3, H, W)`` float in [0, 1], on any device.
        params: ``N`` records as returned by :func:`sample_params` (families may differ per sample).

    Returns:
        The blurred batch, same shape, dtype and device, in [0, 1].
    """
    _check_batch(sharp, "apply_degradation")
    if len(params) != sharp.shape[0]:
        raise ValueError(f"apply_degradation: {len(params)} parameter records for a batch of {sharp.shape[0]}")
    unknown = sorted({str(p.get("family")) for p in params} - set(FAMILIES))
    if unknown:
        raise ValueError(f"apply_degradation: unknown blur families {unknown}; expected {FAMILIES}")
    blurred = torch.empty_like(sharp)
    height, width = sharp.shape[-2:]
    components = [blur_components(p, height, width, sharp.device) for p in params]
    # One batched filter2d per (number of components, component index): one kernel per sample, as kornia is
    # fastest; uniform records in one batch, each component of the mixtures in another.
    for count in sorted({len(c) for c in components}):
        members = [i for i, c in enumerate(components) if len(c) == count]
        subset = sharp[members]
        total: Tensor | None = None
        for k in range(count):
            part = blur_with_kernels(subset, [kernel_from_params(components[i][k][0]) for i in members])
            weights = [components[i][k][1] for i in members]
            if weights[0] is not None:
                part = torch.cat([w for w in weights if w is not None]).to(sharp.dtype) * part
            total = part if total is None else total + part
        assert total is not None
        blurred[members] = total
    for i, record in enumerate(params):
        sigma = float(record.get("noise_sigma", 0.0))
        if sigma > 0:
            generator = torch.Generator(device=sharp.device).manual_seed(int(record["noise_seed"]))
            noise = torch.randn(sharp.shape[1:], generator=generator, device=sharp.device, dtype=sharp.dtype)
            blurred[i] = blurred[i] + sigma * noise
    blurred = blurred.clamp(0.0, 1.0)

    jpeg = [i for i, p in enumerate(params) if p.get("jpeg_quality") is not None]
    if jpeg:
        quality = torch.tensor([float(params[i]["jpeg_quality"]) for i in jpeg], device=sharp.device)
        blurred[jpeg] = kornia.enhance.jpeg_codec_differentiable(blurred[jpeg], quality).clamp(0.0, 1.0)
    return blurred


def degrade(
    sharp: Tensor,
    family: str,
    seed: int,
    *,
    noise_sigma_max: float = 0.01,
    jpeg_quality_min: int = 0,
) -> tuple[Tensor, list[Params]]:
    """Blur a sharp batch with one family of the zoo, per-sample parameters drawn from ``seed``.

    Args:
        sharp: ``(N, 3, H, W)`` float RGB in [0, 1], on any device.
        family: one of :data:`FAMILIES`.
        seed: with ``family``, fixes every parameter and the noise: same seed, bit-identical output on CPU.
        noise_sigma_max: sensor noise sigma is uniform in ``[0, noise_sigma_max]`` per sample.
        jpeg_quality_min: 0 for no JPEG; else quality uniform in ``[jpeg_quality_min, 95]`` per sample.

    Returns:
        ``(blurred, params)``: the blurred batch (same shape/device/dtype, in [0, 1]) and ``N`` JSON-ready
        parameter dicts from which :func:`apply_degradation` rebuilds it.

    Shape:
        - sharp: :math:`(N, 3, H, W)`
        - blurred: :math:`(N, 3, H, W)`
    """
    _check_batch(sharp, "degrade")
    params = sample_params(
        family, sharp.shape[0], seed, noise_sigma_max=noise_sigma_max, jpeg_quality_min=jpeg_quality_min
    )
    return apply_degradation(sharp, params), params


class Degrade(nn.Module):
    """Module form of :func:`degrade` for one family and noise setting; ``forward(sharp, seed)``."""

    def __init__(self, family: str, *, noise_sigma_max: float = 0.01, jpeg_quality_min: int = 0) -> None:
        super().__init__()
        _check_family(family)
        self.family = family
        self.noise_sigma_max = noise_sigma_max
        self.jpeg_quality_min = jpeg_quality_min

    def forward(self, sharp: Tensor, seed: int) -> tuple[Tensor, list[Params]]:
        return degrade(
            sharp,
            self.family,
            seed,
            noise_sigma_max=self.noise_sigma_max,
            jpeg_quality_min=self.jpeg_quality_min,
        )
