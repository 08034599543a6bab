from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from bdirnet.degrade import (
    FAMILIES,
    UNIFORM_FAMILIES,
    Degrade,
    apply_degradation,
    degrade,
    kernel_from_params,
    sample_params,
    shake_kernel,
)


@pytest.fixture
def batch(astronaut: torch.Tensor) -> torch.Tensor:
    crops = [astronaut[..., y : y + 67, x : x + 91] for y, x in ((0, 0), (100, 200), (300, 150))]
    return torch.cat(crops)


@pytest.mark.parametrize("family", FAMILIES)
class TestDegrade:
    def test_shapes_and_range(self, family: str, batch: torch.Tensor) -> None:
        blurred, params = degrade(batch, family, seed=1)
        assert blurred.shape == batch.shape and blurred.dtype == batch.dtype
        assert float(blurred.min()) >= 0.0 and float(blurred.max()) <= 1.0
        assert len(params) == batch.shape[0] and all(p["family"] == family for p in params)
        json.dumps(params)  # plain data

    def test_deterministic(self, family: str, batch: torch.Tensor) -> None:
        first, params_first = degrade(batch, family, seed=7)
        second, params_second = degrade(batch, family, seed=7)
        assert torch.equal(first, second) and params_first == params_second
        third, _ = degrade(batch, family, seed=8)
        assert not torch.equal(first, third)

    def test_reproducible_from_record(self, family: str, batch: torch.Tensor) -> None:
        blurred, params = degrade(batch, family, seed=3)
        record = json.loads(json.dumps(params))
        assert torch.equal(apply_degradation(batch, record), blurred)

    def test_blurs(self, family: str, batch: torch.Tensor) -> None:
        blurred, _ = degrade(batch, family, seed=2, noise_sigma_max=0.0)

        # Blur removes high frequencies: the Laplacian energy drops.
        def laplacian_energy(x: torch.Tensor) -> float:
            lap = x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4 * x[..., 1:-1, 1:-1]
            return float(lap.pow(2).mean())

        assert laplacian_energy(blurred) < 0.7 * laplacian_energy(batch)

    def test_module_equals_function(self, family: str, batch: torch.Tensor) -> None:
        assert torch.equal(Degrade(family)(batch, 5)[0], degrade(batch, family, 5)[0])


@pytest.mark.parametrize("family", UNIFORM_FAMILIES)
def test_kernels_sum_to_one(family: str) -> None:
    for record in sample_params(family, 20, seed=0):
        kernel = kernel_from_params(record)
        assert kernel.ndim == 2 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert float(kernel.min()) >= 0.0
        assert abs(float(kernel.sum()) - 1.0) < 1e-9


def test_nonuniform_subkernels_sum_to_one() -> None:
    for record in sample_params("nonuniform", 10, seed=0):
        for key in ("kernel_a", "kernel_b"):
            assert abs(float(kernel_from_params(record[key]).sum()) - 1.0) < 1e-9
        with pytest.raises(ValueError, match="no single kernel"):
            kernel_from_params(record)


def test_shake_kernels_are_connected_trajectories() -> None:
    rng = np.random.default_rng(0)
    for seed in rng.integers(0, 2**31, size=30):
        kernel = shake_kernel(25, int(seed)).numpy()
        support = kernel > 1e-8
        _, components = ndimage.label(support, structure=np.ones((3, 3)))
        assert components == 1, f"shake kernel (seed {seed}) is not one connected path"
        # A path, not a blob or noise: it covers a small part of the kernel's box, yet spans several pixels.
        assert support.sum() < 0.5 * support.size
        rows, cols = np.nonzero(support)
        assert max(np.ptp(rows), np.ptp(cols)) >= 4


def test_parameters_in_documented_ranges() -> None:
    motion = sample_params("motion", 200, seed=0)
    assert all(7 <= p["kernel_px"] <= 31 and p["kernel_px"] % 2 for p in motion)
    assert all(0.5 <= p["sigma_px"] <= 3.0 for p in sample_params("gaussian", 200, seed=0))
    assert all(2.0 <= p["radius_px"] <= 8.0 for p in sample_params("defocus", 200, seed=0))
    assert all(0.0 <= p["noise_sigma"] <= 0.01 for p in motion)


def test_jpeg_optional(batch: torch.Tensor) -> None:
    plain, _ = degrade(batch, "gaussian", seed=0, noise_sigma_max=0.0)
    compressed, params = degrade(batch, "gaussian", seed=0, noise_sigma_max=0.0, jpeg_quality_min=30)
    assert all(30 <= p["jpeg_quality"] <= 95 for p in params)
    assert compressed.shape == plain.shape and not torch.equal(compressed, plain)
    assert float((compressed - plain).abs().mean()) < 0.05


def test_bad_inputs_named() -> None:
    with pytest.raises(ValueError, match="unknown blur family 'zoom'"):
        degrade(torch.rand(1, 3, 16, 16), "zoom", 0)
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, 3, H, W\), got \(3, 16, 16\)"):
        degrade(torch.rand(3, 16, 16), "motion", 0)
    with pytest.raises(ValueError, match="floating-point"):
        degrade(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "motion", 0)
