"""The blur zoo: seeded, batched synthetic degradations built on kornia.

Every family is a pure function of (sharp batch, per-sample parameters) -> blurred batch. Parameters are drawn
with ``numpy.random.default_rng([seed, crc32(family)])`` and returned as plain data (JSON-ready dicts), so any
pair can be rebuilt from its record with :func:`apply_degradation`, and any uniform kernel with
:func:`kernel_from_params` (the Wiener / Richardson-Lucy oracles use that).

Families (DESIGN.md §2):

- ``motion``: linear motion, length 7-31 px, any angle, uneven speed (``kornia.filters.get_motion_kernel2d``),
  moved onto its centre of mass.
- ``gaussian``: isotropic Gaussian, sigma 0.5-3 px (``kornia.filters.get_gaussian_kernel2d``).
- ``shake``: camera-shake trajectories (random walk with inertia, Boracchi & Foi 2012 style), rasterised.
- ``defocus``: anti-aliased disk, radius 2-8 px.
- ``nonuniform``: two kernels of the four families above blended by a smooth random mask (spatially varying).
- ``none``: no blur (a 1×1 identity kernel), only the sensor noise and JPEG of the other families: the "do no
  harm" check of evaluation. Neither a training nor a held-out family by default, never a ``nonuniform``
  component, and it draws nothing but the noise/JPEG parameters.

Every kernel's centre of mass is its centre, so a blurred image is never shifted against its sharp one (a random
shift is not learnable: the network learns to leave the blur). All kernels are applied with
``kornia.filters.filter2d`` (one kernel per sample), then sensor noise
(Gaussian, sigma <= ``noise_sigma_max``), optional JPEG (``kornia.enhance.jpeg_codec_differentiable``) and
clipping to [0, 1]. The parameters are drawn on the CPU; the kernels of a whole batch are built at once in torch,
float64, on the device of the input batch (:func:`batch_kernels`, every family vectorised, grouped by family),
then cast to the batch's dtype. :func:`kernel_from_params` is the per-sample CPU reference of the same kernel
(tests hold the two within 1e-12 and their float32 casts equal); the camera-shake trajectories themselves are a
sequential random walk on numpy's generator and stay per sample on the CPU, only their rasterisation is batched.

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


def _draw_none(rng: np.random.Generator) -> Params:
    return {}


NONE_NOISE_MIN = 0.003
"""The ``none`` family's smallest sensor-noise sigma (0.77 grey levels; about 50 dB): below about 0.002 the 8-bit
rounding gives back the sharp crop itself, whose PSNR is infinite and would make every mean infinite."""

MIXTURE_COMPONENTS: tuple[str, ...] = ("motion", "gaussian", "shake", "defocus")
"""The families a ``nonuniform`` record blends, fixed (a new uniform family must not change its draws)."""


def _draw_nonuniform(rng: np.random.Generator) -> Params:
    first, second = rng.choice(len(MIXTURE_COMPONENTS), size=2, replace=False)
    name_a, name_b = MIXTURE_COMPONENTS[int(first)], MIXTURE_COMPONENTS[int(second)]
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
        noise_sigma_max: sensor noise sigma is uniform in ``[m, max(noise_sigma_max, m)]``, ``m`` the family's
            ``noise_sigma_min`` (0, or :data:`NONE_NOISE_MIN` for ``none``); no draw when that range is ``[0, 0]``.
        jpeg_quality_min: 0 for no JPEG, else quality uniform in ``[jpeg_quality_min, 95]``.

    Returns:
        ``num_samples`` JSON-ready dicts with ``family``, the kernel parameters, ``noise_sigma``,
        ``noise_seed`` and ``jpeg_quality`` (``None`` when off).
    """
    _check_family(family)
    rng = family_rng(seed, family)
    spec = BLUR_FAMILIES[family]
    noise_low = spec.noise_sigma_min
    noise_high = max(noise_sigma_max, noise_low)
    params = []
    for _ in range(num_samples):
        record: Params = {"family": family, **spec.draw(rng)}
        record["noise_sigma"] = float(rng.uniform(noise_low, noise_high)) if noise_high > 0 else 0.0
        record["noise_seed"] = int(rng.integers(2**31))
        record["jpeg_quality"] = int(rng.integers(jpeg_quality_min, 96)) if jpeg_quality_min > 0 else None
        params.append(record)
    return params


# --------------------------------------------------------------------------------------------- kernels
def mass_offsets(kernels: Tensor) -> Tensor:
    """``(n, 2)``: how far each ``(n, k, k)`` float64 kernel's (odd ``k``) centre of mass lies from its centre,
    ``(rows, columns)`` px."""
    offsets = _centred(kernels.shape[-1], kernels.device)
    mass = kernels.sum(dim=(1, 2))
    rows = (kernels.sum(dim=2) * offsets).sum(dim=1) / mass
    columns = (kernels.sum(dim=1) * offsets).sum(dim=1) / mass
    return torch.stack([rows, columns], dim=1)


def centre_of_mass(kernels: Tensor, margin: int) -> Tensor:
    """Move every kernel of ``(n, k, k)`` so that its centre of mass is its centre; ``(n, k + 2m, k + 2m)``.

    A kernel whose mass centre is off its centre shifts the blurred image against the sharp one: a pair that is
    misaligned by a random sub-pixel to several-pixel offset, which no network can learn to undo, so it learns to
    leave the blur. Each kernel is zero-padded by ``margin`` and resampled at its own offset with linear
    interpolation (two taps per axis), which moves the mass centre by exactly that offset and keeps the sum, as
    long as the moved kernel fits: the caller's ``margin`` bounds the offset plus one tap.
    """
    padded = F.pad(kernels, (margin, margin, margin, margin))
    offsets = mass_offsets(padded)
    if bool((offsets.abs() > margin - 1).any()):
        raise ValueError(
            f"centre_of_mass: a kernel's mass centre is {offsets.abs().max():.2f} px off, beyond the margin {margin}"
        )
    size = padded.shape[-1]
    taps = torch.arange(size, dtype=padded.dtype, device=padded.device)
    columns = (taps[None, None, :] + offsets[:, 1, None, None]).expand(-1, size, size)
    rows = (taps[None, :, None] + offsets[:, 0, None, None]).expand(-1, size, size)
    grid = torch.stack([columns, rows], dim=-1) * (2 / (size - 1)) - 1
    moved = F.grid_sample(padded[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
    return moved / moved.sum(dim=(1, 2), keepdim=True)


def motion_margin(length_px: int) -> int:
    """How far a motion kernel of ``length_px`` grows on each side when centred on its centre of mass.

    Uneven speed puts the mass centre of a line of ``L`` taps up to ``(L - 1) / 6`` from its middle (a ramp of
    weights from 0 to 1); bilinear rotation adds at most half a pixel and the fractional shift one more tap.
    """
    return math.ceil((length_px - 1) / 6 + 0.5) + 1


def motion_kernel_px(length_px: int) -> int:
    """The side of the centred motion kernel of a ``length_px`` line: ``length_px + 2 * motion_margin``."""
    return length_px + 2 * motion_margin(length_px)


def motion_kernel(kernel_px: int, angle_deg: float, direction: float) -> Tensor:
    """Linear motion kernel, sum 1: kornia's line of ``kernel_px`` taps, rotated bilinearly, then moved so that its
    centre of mass is the kernel's centre (:func:`centre_of_mass`); side :func:`motion_kernel_px`."""
    kernel = kornia.filters.get_motion_kernel2d(
        kernel_px,
        torch.tensor([angle_deg], dtype=torch.float64),
        torch.tensor([direction], dtype=torch.float64),
        mode="bilinear",
    )
    kernel = kernel / kernel.sum()
    return centre_of_mass(kernel, motion_margin(kernel_px))[0]


def gaussian_kernel_px(sigma_px: float) -> int:
    """The side of the Gaussian kernel of ``sigma_px``: ``2 * ceil(3 sigma) + 1``."""
    return 2 * math.ceil(3.0 * sigma_px) + 1


def disk_kernel_px(radius_px: float) -> int:
    """The side of the disk kernel of ``radius_px``: ``2 * ceil(radius) + 1``."""
    return 2 * math.ceil(radius_px) + 1


def gaussian_kernel(sigma_px: float) -> Tensor:
    """Isotropic Gaussian kernel of size ``2 * ceil(3 sigma) + 1``, sum 1."""
    size = gaussian_kernel_px(sigma_px)
    sigma = torch.tensor([[sigma_px, sigma_px]], dtype=torch.float64)
    kernel = kornia.filters.get_gaussian_kernel2d((size, size), sigma)[0]
    return kernel / kernel.sum()


def disk_kernel(radius_px: float, supersample: int = 16) -> Tensor:
    """Anti-aliased disk (defocus): each tap is the fraction of its pixel inside the circle; sum 1."""
    half = math.ceil(radius_px)
    size = disk_kernel_px(radius_px)
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

    The trajectory is centred on its arc-length centroid and scaled to reach at most ``(kernel_px - 3) / 2`` px from
    it, densified to steps of at most 0.25 px, moved so that the mean of the densified points is the kernel's centre,
    and splatted bilinearly: the support is 8-connected, and the kernel's centre of mass is its centre (a bilinear
    splat keeps the mean position), so the blurred image is not shifted against the sharp one.
    """
    rng = np.random.default_rng(trajectory_seed)
    positions = shake_trajectory(rng, length_px=float(kernel_px))
    lengths = np.abs(np.diff(positions))
    positions = positions - ((positions[:-1] + positions[1:]) / 2 * lengths).sum() / lengths.sum()
    extent = max(np.abs(positions.real).max(), np.abs(positions.imag).max(), 1e-6)
    positions = positions * min(1.0, (kernel_px - 3) / 2 / extent)
    segment_lengths = np.abs(np.diff(positions))
    samples = []
    for start, end, seg in zip(positions[:-1], positions[1:], segment_lengths, strict=True):
        count = max(2, math.ceil(seg / 0.25) + 1)
        samples.append(start + (end - start) * np.linspace(0.0, 1.0, count, endpoint=False))
    samples.append(positions[-1:])
    points = np.concatenate(samples)
    points = points - points.mean() + (kernel_px // 2) * (1 + 1j)
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


def _mask_grid(mask_cells: int, mask_seed: int) -> np.ndarray:
    return np.random.default_rng(mask_seed).uniform(0.0, 1.0, size=(1, 1, mask_cells, mask_cells))


def smooth_mask(mask_cells: int, mask_seed: int, height: int, width: int, device: torch.device) -> Tensor:
    """A smooth random blend mask in [0, 1], ``(1, 1, H, W)``: a coarse random grid, upsampled bicubically."""
    grid = torch.from_numpy(_mask_grid(mask_cells, mask_seed)).float().to(device)
    mask = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return mask.clamp(0.0, 1.0)


def identity_kernel() -> Tensor:
    """The 1×1 kernel of the ``none`` family: no blur."""
    return torch.ones(1, 1, dtype=torch.float64)


# --------------------------------------------------------------------------------------------- batched kernels
# One builder per family: the records of that family -> their float64 kernels ``(n, k, k)`` on ``device``, each
# centred in a square of the largest ``k`` among them (zeros around). Each follows its per-sample reference above
# operation by operation, vectorised over the records, so the two agree to float64 roundoff.
def _values(params: Sequence[Params], key: str, device: torch.device) -> Tensor:
    """``params[i][key]`` as a float64 ``(n, 1, 1)`` column on ``device``."""
    return torch.tensor([float(p[key]) for p in params], dtype=torch.float64, device=device)[:, None, None]


def _centred(size: int, device: torch.device) -> Tensor:
    """Offsets of the taps of a ``size`` kernel from its centre, ``-(size // 2) .. size // 2``, float64."""
    return torch.arange(size, dtype=torch.float64, device=device) - size // 2


def motion_kernels(params: Sequence[Params], device: torch.device) -> Tensor:
    """:func:`motion_kernel` of every record, batched: the weighted line rotated with bilinear sampling, centred on
    its centre of mass.

    ``kornia.geometry.transform.rotate`` (``align_corners=True``) samples the unrotated kernel at
    ``R(-angle) (p - c) + c`` with zero padding; here that sampling is written out for every record at once, in
    each record's own ``kernel_px`` frame (taps outside it are zero), so records of different sizes share a batch.
    """
    size = max(int(p["kernel_px"]) for p in params)
    taps = _values(params, "kernel_px", device)
    half = (taps - 1) / 2
    direction = (_values(params, "direction", device).clamp(-1.0, 1.0) + 1.0) / 2.0
    step = (1 - 2 * direction) / (taps - 1)
    radians = _values(params, "angle_deg", device) * math.pi / 180.0
    cos, sin = torch.cos(radians), torch.sin(radians)
    offsets = _centred(size, device)
    u, v = offsets[None, None, :], offsets[None, :, None]  # column and row offsets from the centre
    x = cos * u - sin * v + half  # where each tap samples the unrotated kernel, in its own pixel frame
    y = sin * u + cos * v + half
    x0, y0 = x.floor(), y.floor()

    def line(column: Tensor) -> Tensor:  # the weighted middle row of the unrotated kernel, zero outside it
        return torch.where((column >= 0) & (column <= taps - 1), direction + step * column, 0.0)

    row = torch.where(y0 == half, (y0 + 1) - y, 0.0) + torch.where(y0 + 1 == half, y - y0, 0.0)
    kernel = row * (((x0 + 1) - x) * line(x0) + (x - x0) * line(x0 + 1))
    kernel = torch.where((u.abs() <= half) & (v.abs() <= half), kernel, 0.0)
    kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)  # kornia's normalisation
    kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)  # and motion_kernel's
    return centre_of_mass(kernel, motion_margin(size))


def gaussian_kernels(params: Sequence[Params], device: torch.device) -> Tensor:
    """:func:`gaussian_kernel` of every record, batched (kornia's sampled Gaussian, each on its own window)."""
    sizes = [gaussian_kernel_px(float(p["sigma_px"])) for p in params]
    sigma = _values(params, "sigma_px", device)[:, :, 0]
    half = torch.tensor([s // 2 for s in sizes], dtype=torch.float64, device=device)[:, None]
    x = _centred(max(sizes), device)[None, :]
    gauss = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))
    gauss = torch.where(x.abs() <= half, gauss, 0.0)
    gauss = gauss / gauss.sum(-1, keepdim=True)
    kernel = gauss[:, :, None] * gauss[:, None, :]
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def disk_kernels(params: Sequence[Params], device: torch.device, supersample: int = 16) -> Tensor:
    """:func:`disk_kernel` of every record, batched: the share of each tap's subsamples inside the circle.

    The coverage counts are exact, so the result equals the per-sample reference to the last bit. They are
    counted in one quadrant and mirrored: the subsample offsets are symmetric about each tap's centre.
    """
    size = max(disk_kernel_px(float(p["radius_px"])) for p in params)
    half = size // 2
    radius2 = torch.tensor([float(p["radius_px"]) ** 2 for p in params], dtype=torch.float64, device=device)
    sub = (torch.arange(supersample, dtype=torch.float64, device=device) + 0.5) / supersample - 0.5
    coords = torch.arange(half + 1, dtype=torch.float64, device=device)[:, None] + sub[None, :]  # (half + 1, S)
    distance2 = coords[:, None, :, None] ** 2 + coords[None, :, None, :] ** 2  # (half + 1, half + 1, S, S)
    inside = distance2[None] <= radius2[:, None, None, None, None]
    quadrant = inside.sum(dim=(3, 4)).to(torch.float64) / supersample**2
    mirror = _centred(size, device).abs().long()
    coverage = quadrant[:, mirror][:, :, mirror]
    return coverage / coverage.sum(dim=(1, 2), keepdim=True)


def shake_kernels(params: Sequence[Params], device: torch.device) -> Tensor:
    """:func:`shake_kernel` of every record, batched.

    The trajectories are drawn per record on the CPU (:func:`shake_trajectory` is a sequential walk on numpy's
    generator, RNG-bound); centring and scaling are done for all of them at once, then the densification, the
    centring on the points' mean and the bilinear splat run in torch on ``device``, the splat tap by tap in the
    reference's order.
    """
    sizes = np.array([int(p["kernel_px"]) for p in params])
    size = int(sizes.max())
    positions = np.stack(
        [
            shake_trajectory(np.random.default_rng(int(p["trajectory_seed"])), length_px=float(k))
            for p, k in zip(params, sizes, strict=True)
        ]
    )
    arc = np.abs(np.diff(positions, axis=1))
    positions = positions - (((positions[:, :-1] + positions[:, 1:]) / 2 * arc).sum(axis=1) / arc.sum(axis=1))[:, None]
    x, y = positions.real, positions.imag
    extent = np.maximum(np.maximum(np.abs(x).max(axis=1), np.abs(y).max(axis=1)), 1e-6)
    scale = np.minimum(1.0, (sizes - 3) / 2 / extent)[:, None]
    x, y = x * scale, y * scale
    lengths = np.abs(np.diff(x + 1j * y, axis=1))  # (n, steps - 1), as the reference's np.abs of a complex diff
    counts = np.maximum(2, np.ceil(lengths / 0.25) + 1).astype(np.int64)

    xs = torch.from_numpy(x).to(device)
    ys = torch.from_numpy(y).to(device)
    per_segment = torch.from_numpy(counts).to(device).reshape(-1)
    segment = torch.repeat_interleave(torch.arange(per_segment.numel(), device=device), per_segment)
    first = torch.cumsum(per_segment, 0) - per_segment
    fraction = (torch.arange(segment.numel(), device=device) - first[segment]).to(torch.float64)
    fraction = fraction * (1.0 / per_segment.to(torch.float64))[segment]  # np.linspace(0, 1, count, endpoint=False)
    steps = positions.shape[1] - 1
    x_start, y_start = xs[:, :-1].reshape(-1)[segment], ys[:, :-1].reshape(-1)[segment]
    x_end, y_end = xs[:, 1:].reshape(-1)[segment], ys[:, 1:].reshape(-1)[segment]
    # Every sample of every segment, then every trajectory's end point (after its own samples, as in the reference).
    record = torch.cat([segment // steps, torch.arange(len(params), device=device)])
    px = torch.cat([x_start + (x_end - x_start) * fraction, xs[:, -1]])
    py = torch.cat([y_start + (y_end - y_start) * fraction, ys[:, -1]])
    points = torch.bincount(record, minlength=len(params)).to(torch.float64)

    def about_mean(values: Tensor) -> Tensor:  # each record's points moved so that their mean is 0
        sums = torch.zeros(len(params), dtype=torch.float64, device=device).index_add_(0, record, values)
        return values - (sums / points)[record]

    px, py = about_mean(px), about_mean(py)
    half = torch.from_numpy(sizes // 2).to(device=device, dtype=torch.float64)[record]
    px, py = px + half, py + half
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    margin = (size - 2 * half.long() - 1) // 2  # where each record's own square sits in the shared one
    base = record * size * size + (y0.long() + margin) * size + (x0.long() + margin)
    kernel = torch.zeros(len(params) * size * size, dtype=torch.float64, device=device)
    for dx, dy, weight in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        kernel.index_add_(0, base + dy * size + dx, weight)
    kernel = kernel.reshape(len(params), size, size)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def identity_kernels(params: Sequence[Params], device: torch.device) -> Tensor:
    """:func:`identity_kernel` of every record: ``(n, 1, 1)`` ones."""
    return torch.ones(len(params), 1, 1, dtype=torch.float64, device=device)


def smooth_masks(params: Sequence[Params], height: int, width: int, device: torch.device) -> Tensor:
    """:func:`smooth_mask` of every ``nonuniform`` record, ``(n, 1, H, W)``: one bicubic upsampling per grid size."""
    grids = [_mask_grid(int(p["mask_cells"]), int(p["mask_seed"])) for p in params]
    masks = torch.empty(len(params), 1, height, width, device=device)
    for cells in sorted({grid.shape[-1] for grid in grids}):
        members = [i for i, grid in enumerate(grids) if grid.shape[-1] == cells]
        grid = torch.from_numpy(np.concatenate([grids[i] for i in members])).float().to(device)
        masks[members] = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
    return masks.clamp(0.0, 1.0)


def _nonuniform_mixture(
    params: Sequence[Params], height: int, width: int, device: torch.device
) -> list[tuple[list[Params], Tensor]]:
    masks = smooth_masks(params, height, width, device)
    return [([p["kernel_a"] for p in params], masks), ([p["kernel_b"] for p in params], 1.0 - masks)]


# --------------------------------------------------------------------------------------------- the families
Mixture = Callable[[Sequence[Params], int, int, torch.device], list[tuple[list[Params], Tensor]]]


@dataclass(frozen=True)
class BlurFamily:
    """One family of the zoo, defined once: how its parameters are drawn and how its blur is built.

    A *uniform* family has one kernel per record, given three ways: ``kernel`` (a record -> its float64 kernel,
    sum 1: the per-sample CPU reference), ``kernels`` (records and a device -> their kernels ``(n, k, k)``,
    batched, each centred in the largest) and ``kernel_px`` (a record -> the side of its kernel). A spatially
    varying family has ``mixture`` (records and the image size -> ``(uniform component records, weight maps
    (n, 1, H, W))`` pairs whose weights sum to 1). ``noise_sigma_min`` is the floor of its records' sensor-noise
    sigma (:func:`sample_params`). The application (:func:`apply_degradation`) and the
    deconvolution oracles (:mod:`bdirnet.classical`) only read these, so a new family is one entry of
    :data:`BLUR_FAMILIES`.
    """

    name: str
    draw: Callable[[np.random.Generator], Params]
    kernel: Callable[[Params], Tensor] | None = None
    kernels: Callable[[Sequence[Params], torch.device], Tensor] | None = None
    kernel_px: Callable[[Params], int] | None = None
    mixture: Mixture | None = None
    noise_sigma_min: float = 0.0

    def __post_init__(self) -> None:
        uniform = (self.kernel, self.kernels, self.kernel_px)
        if not (all(f is not None for f in uniform) or all(f is None for f in uniform)):
            raise ValueError(f"blur family {self.name!r}: a uniform family gives kernel, kernels and kernel_px")
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
            kernels=motion_kernels,
            kernel_px=lambda p: motion_kernel_px(int(p["kernel_px"])),
        ),
        BlurFamily(
            "gaussian",
            _draw_gaussian,
            kernel=lambda p: gaussian_kernel(float(p["sigma_px"])),
            kernels=gaussian_kernels,
            kernel_px=lambda p: gaussian_kernel_px(float(p["sigma_px"])),
        ),
        BlurFamily(
            "shake",
            _draw_shake,
            kernel=lambda p: shake_kernel(int(p["kernel_px"]), int(p["trajectory_seed"])),
            kernels=shake_kernels,
            kernel_px=lambda p: int(p["kernel_px"]),
        ),
        BlurFamily(
            "defocus",
            _draw_defocus,
            kernel=lambda p: disk_kernel(float(p["radius_px"])),
            kernels=disk_kernels,
            kernel_px=lambda p: disk_kernel_px(float(p["radius_px"])),
        ),
        BlurFamily("nonuniform", _draw_nonuniform, mixture=_nonuniform_mixture),
        BlurFamily(  # never a bit-exact copy (whose PSNR is infinite): noise from NONE_NOISE_MIN up
            "none",
            _draw_none,
            kernel=lambda p: identity_kernel(),
            kernels=identity_kernels,
            kernel_px=lambda p: 1,
            noise_sigma_min=NONE_NOISE_MIN,
        ),
    )
}
"""Every family of the zoo by name, in a fixed order (DESIGN.md §2); ``none`` (no blur) last."""

FAMILIES: tuple[str, ...] = tuple(BLUR_FAMILIES)
"""Every family name, in the order of :data:`BLUR_FAMILIES`."""

UNIFORM_FAMILIES: tuple[str, ...] = tuple(name for name, family in BLUR_FAMILIES.items() if family.uniform)
"""Families whose blur is one kernel for the whole image (a deconvolution oracle applies); includes ``none``."""


def blur_family(name: object) -> BlurFamily:
    """The family record of ``name``; a clear error for an unknown one."""
    if not isinstance(name, str) or name not in BLUR_FAMILIES:
        raise ValueError(f"unknown blur family {name!r}; expected one of {FAMILIES}")
    return BLUR_FAMILIES[name]


def _uniform_family(params: Params, where: str) -> BlurFamily:
    family = blur_family(params.get("family"))
    if family.kernel is None:
        raise ValueError(f"{where}: family {family.name!r} has no single kernel; expected one of {UNIFORM_FAMILIES}")
    return family


def kernel_from_params(params: Params) -> Tensor:
    """Rebuild the float64 kernel of a uniform-family record on the CPU, one record at a time (the reference)."""
    family = _uniform_family(params, "kernel_from_params")
    assert family.kernel is not None
    return family.kernel(params)


def batch_kernels(
    params: Sequence[Params],
    size: int | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The kernels of many uniform-family records at once, built in torch on ``device``, grouped by family.

    Computed in float64 (whatever ``dtype``) and equal to :func:`kernel_from_params` of each record to float64
    roundoff, zero-padded to a common odd ``size``, then cast to ``dtype``.

    Args:
        params: records of uniform families (:data:`UNIFORM_FAMILIES`), families may differ per record.
        size: the side of the output; default the largest kernel among ``params``; never smaller.
        device: where to build them (default CPU).
        dtype: the output dtype.

    Returns:
        ``(N, size, size)`` kernels, each centred, each summing to 1.

    Example:
        >>> records = sample_params("motion", 3, seed=0) + sample_params("defocus", 2, seed=0)
        >>> batch_kernels(records).shape[0], float(batch_kernels(records).sum())
        (5, 5.0)
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    families = [_uniform_family(p, "batch_kernels") for p in params]
    sides = [family.kernel_px(p) for family, p in zip(families, params, strict=True)]  # type: ignore[misc]
    largest = max(sides, default=1)
    size = largest if size is None else int(size)
    if size < largest or size % 2 == 0:
        raise ValueError(f"batch_kernels: size {size} must be odd and at least the largest kernel, {largest}")
    out = torch.zeros(len(params), size, size, dtype=torch.float64, device=device)
    for name in dict.fromkeys(family.name for family in families):
        members = [i for i, family in enumerate(families) if family.name == name]
        build = BLUR_FAMILIES[name].kernels
        assert build is not None
        kernels = build([params[i] for i in members], device)
        margin = (size - kernels.shape[-1]) // 2
        kernels = F.pad(kernels, (margin, margin, margin, margin))
        if len(members) == len(params):
            return kernels.to(dtype)
        out.index_copy_(0, torch.tensor(members, device=device), kernels)
    return out.to(dtype)


def blur_components(
    params: Params, height: int, width: int, device: torch.device
) -> list[tuple[Params, Tensor | None]]:
    """A record's blur as ``(uniform kernel record, weight map or None)`` pairs: one pair without weights for a
    uniform family, the family's mixture (weights ``(1, 1, H, W)``) for a spatially varying one."""
    family = blur_family(params.get("family"))
    if family.mixture is None:
        return [(params, None)]
    return [(records[0], weights) for records, weights in family.mixture([params], height, width, device)]


# --------------------------------------------------------------------------------------------- application
def blur_with_kernels(images: Tensor, kernels: Tensor) -> Tensor:
    """Blur each image with its own kernel of the ``(N, k, k)`` stack (``kornia.filters.filter2d``, reflect border)."""
    stacked = kernels.to(device=images.device, dtype=images.dtype)
    return kornia.filters.filter2d(images, stacked, border_type="reflect")


def _blur(images: Tensor, params: Sequence[Params]) -> Tensor:
    """Blur each image with the kernel of its uniform-family record, the kernels built at once on its device."""
    return blur_with_kernels(images, batch_kernels(params, device=images.device, dtype=images.dtype))


def _check_batch(images: Tensor, where: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: expected a batch of shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{where}: expected a floating-point batch in [0, 1], got dtype {images.dtype}")


def _check_family(family: str) -> None:
    blur_family(family)


def apply_blur(sharp: Tensor, params: Sequence[Params]) -> Tensor:
    """The blur step of :func:`apply_degradation` alone (no noise, JPEG or clipping), same arguments.

    Every uniform record is blurred in one batched ``filter2d`` with its kernel from :func:`batch_kernels`
    (zero-padded to the largest of them), each spatially varying family's records in one per component, weighted.
    """
    _check_batch(sharp, "apply_blur")
    if len(params) != sharp.shape[0]:
        raise ValueError(f"apply_blur: {len(params)} parameter records for a batch of {sharp.shape[0]}")
    blurred = torch.empty_like(sharp)
    height, width = sharp.shape[-2:]
    families = [blur_family(p.get("family")) for p in params]
    uniform = [i for i, family in enumerate(families) if family.uniform]
    if uniform:
        blurred[uniform] = _blur(sharp[uniform], [params[i] for i in uniform])
    for name in dict.fromkeys(family.name for family in families if not family.uniform):
        members = [i for i, family in enumerate(families) if family.name == name]
        mixture = BLUR_FAMILIES[name].mixture
        assert mixture is not None
        subset = sharp[members]
        total: Tensor | None = None
        for records, weights in mixture([params[i] for i in members], height, width, sharp.device):
            part = weights.to(sharp.dtype) * _blur(subset, records)
            total = part if total is None else total + part
        assert total is not None
        blurred[members] = total
    return blurred


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
    blurred = apply_blur(sharp, params)
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
