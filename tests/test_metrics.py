from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bdirnet.degrade import FAMILIES, degrade
from bdirnet.metrics import psnr, ssim

from .conftest import photo


def as_numpy(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_matches_skimage_on_real_photos(name: str) -> None:
    sharp = photo(name)[..., :160, :200]
    blurred = torch.cat([degrade(sharp, family, seed=0)[0] for family in FAMILIES])
    sharp = sharp.expand_as(blurred)
    ours_psnr, ours_ssim = psnr(blurred, sharp), ssim(blurred, sharp)
    assert ours_psnr.shape == ours_ssim.shape == (len(FAMILIES),)
    for i in range(len(FAMILIES)):
        reference_psnr = peak_signal_noise_ratio(as_numpy(sharp[i]), as_numpy(blurred[i]), data_range=1)
        reference_ssim = structural_similarity(
            as_numpy(sharp[i]),
            as_numpy(blurred[i]),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1,
            channel_axis=-1,
        )
        assert abs(float(ours_psnr[i]) - reference_psnr) < 1e-4
        assert abs(float(ours_ssim[i]) - reference_ssim) < 1e-4


def test_per_image_not_batch_mean() -> None:
    sharp = torch.rand(2, 3, 32, 32)
    restored = sharp.clone()
    restored[1] += 0.1
    values = psnr(restored.clamp(0, 1), sharp)
    assert values[0] == float("inf") and 15 < float(values[1]) < 25
    assert ssim(sharp, sharp).tolist() == pytest.approx([1.0, 1.0])


def test_mismatch_named() -> None:
    with pytest.raises(ValueError, match=r"psnr: restored \(1, 3, 8, 8\) and sharp \(1, 3, 8, 9\)"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11×11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
