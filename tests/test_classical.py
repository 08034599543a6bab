"""The classical oracles restore pairs of the zoo from their true kernels."""

from __future__ import annotations

import pytest
import torch

from bdirnet.classical import oracle_restore, wiener_deconvolve
from bdirnet.degrade import FAMILIES, degrade
from bdirnet.metrics import psnr


@pytest.mark.parametrize("method", ["wiener", "richardson_lucy"])
def test_oracle_beats_blurred_on_uniform_motion(astronaut: torch.Tensor, method: str) -> None:
    sharp = astronaut[..., 100:228, 150:278]
    blurred, params = degrade(sharp, "motion", seed=3, noise_sigma_max=0.002)
    restored = oracle_restore(blurred, params[0], method)  # type: ignore[arg-type]
    assert restored.shape == sharp.shape and float(restored.min()) >= 0 and float(restored.max()) <= 1
    assert float(psnr(restored, sharp)) > float(psnr(blurred, sharp)) + 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_wiener_oracle_runs_on_every_family(coffee: torch.Tensor, family: str) -> None:
    sharp = coffee[..., 100:196, 200:296]
    blurred, params = degrade(sharp, family, seed=0, noise_sigma_max=0.0)
    restored = oracle_restore(blurred, params[0])
    if family == "none":  # nothing to undo: the oracle's delta kernel keeps the image (blurred PSNR is infinite)
        assert float(psnr(restored, sharp)) > 45.0
    else:
        assert float(psnr(restored, sharp)) > float(psnr(blurred, sharp))


def test_wiener_rejects_bad_kernel() -> None:
    with pytest.raises(ValueError, match=r"square \(k, k\) kernel"):
        wiener_deconvolve(torch.rand(1, 3, 16, 16), torch.ones(3, 5) / 15)
