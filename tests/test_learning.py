"""Training on one real photo: the two failure modes of the pilot (exploding feature norms, sitting at the
identity) must not occur, and BDIRNet must learn to deblur."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import LossConfig, TrainConfig
from bdirnet.degrade import degrade
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import TrainingModule
from bdirnet.metrics import psnr


def train_on_photo(
    image: torch.Tensor, model_config: ModelConfig, config: TrainConfig, family: str, patch: int, steps: int
) -> tuple[BDIRNet, list[float]]:
    """Train on random patches of the top 3/4 of ``image``; returns the model and the feature RMS per step."""
    model = BDIRNet(model_config)
    module = TrainingModule(model, config.loss)
    optimizer, scheduler = build_optimizer(module, config, total_steps=steps)
    rng = np.random.default_rng(config.seed)
    top = int(image.shape[-2] * 0.75)
    feature_rms = []
    for step in range(steps):
        ys = rng.integers(0, top - patch, config.batch_size)
        xs = rng.integers(0, image.shape[-1] - patch, config.batch_size)
        sharp = torch.stack([image[:, y : y + patch, x : x + patch] for y, x in zip(ys, xs, strict=True)])
        blurred, _ = degrade(sharp, family, seed=step, noise_sigma_max=0.0)  # blur alone: the test is about deblurring
        result = train_step(module, optimizer, blurred, sharp, step, bf16=config.bf16_autocast)
        scheduler.step()
        assert np.isfinite(list(result.parts.values())).all(), f"step {step}: {result.parts}"
        feature_rms.append(result.parts["feature_rms_blurred"])
    return model.eval(), feature_rms


def held_out_crops(image: torch.Tensor) -> torch.Tensor:
    """Four 96×96 crops from the bottom quarter of the photo, never seen in training."""
    top = int(image.shape[-2] * 0.75)
    step = image.shape[-1] // 4
    return torch.stack([image[:, top : top + 96, x : x + 96] for x in range(0, 4 * step, step)])


def assert_bounded(feature_rms: list[float]) -> None:
    first = feature_rms[0]
    assert max(feature_rms) < 10 * first and min(feature_rms) > 0.1 * first, (
        f"feature norms left [0.1, 10] x their start: {first:.3g} -> min {min(feature_rms):.3g}, "
        f"max {max(feature_rms):.3g}"
    )


@pytest.mark.slow
def test_bdirnet_learns_gaussian_deblurring(astronaut: torch.Tensor) -> None:
    """300 steps of the full objective (EMA latent comparison + autoencoding) on patches of one photo."""
    image = astronaut[0]
    config = TrainConfig(batch_size=8, lr=3e-3, bf16_autocast=True, loss=LossConfig(latent_warmup_steps=50))
    model, feature_rms = train_on_photo(image, ModelConfig(width_channels=16, levels=2), config, "gaussian", 64, 300)
    assert_bounded(feature_rms)
    sharp = held_out_crops(image)
    blurred, _ = degrade(sharp, "gaussian", seed=123, noise_sigma_max=0.0)
    with torch.no_grad():
        restored = model(blurred)
    gain = float(psnr(restored, sharp).mean() - psnr(blurred, sharp).mean())
    assert gain >= 2.0, f"held-out PSNR gain over the blurred input is only {gain:.2f} dB"


@pytest.mark.slow
def test_infonce_objective_is_stable(coffee: torch.Tensor) -> None:
    image = coffee[0]
    config = TrainConfig(batch_size=4, lr=2e-3, bf16_autocast=True,
                         loss=LossConfig(latent_loss="infonce", latent_weight=0.5, latent_warmup_steps=20))  # fmt: skip
    model, feature_rms = train_on_photo(image, ModelConfig(width_channels=8, levels=2), config, "gaussian", 48, 120)
    assert_bounded(feature_rms)
    sharp = held_out_crops(image)
    blurred, _ = degrade(sharp, "gaussian", seed=7)
    with torch.no_grad():
        restored = model(blurred)
    assert float((restored - blurred).abs().mean()) > 0.002, "the network sits at the identity"
    assert float(psnr(restored, sharp).mean()) > float(psnr(blurred, sharp).mean())
