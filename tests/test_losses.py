from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import LossConfig
from bdirnet.losses import (
    BDIRNetObjective,
    charbonnier,
    fft_l1,
    infonce_loss,
    latent_cosine_loss,
    latent_warmup,
    multiscale_loss,
    total_loss,
)

TINY = ModelConfig(width_channels=8, levels=2)


def f64(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, requires_grad=True)


class TestGradcheck:
    def test_charbonnier(self) -> None:
        assert torch.autograd.gradcheck(lambda a, b: charbonnier(a, b), (f64(1, 3, 4, 4), f64(1, 3, 4, 4)))

    def test_fft_l1(self) -> None:
        assert torch.autograd.gradcheck(fft_l1, (f64(1, 3, 4, 4), f64(1, 3, 4, 4)))

    def test_latent_cosine(self) -> None:
        assert torch.autograd.gradcheck(lambda a, b: latent_cosine_loss([a], [b]), (f64(2, 4, 3, 3), f64(2, 4, 3, 3)))

    def test_infonce(self) -> None:
        assert torch.autograd.gradcheck(lambda a, b: infonce_loss(a, b, 0.5), (f64(3, 5), f64(3, 5)))


class TestLatentComparison:
    def test_zero_for_identical(self) -> None:
        features = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
        assert float(latent_cosine_loss(features, features)) == pytest.approx(0.0, abs=1e-6)

    def test_cannot_be_driven_to_zero_by_scaling(self) -> None:
        predicted, target = [torch.randn(2, 8, 6, 6)], [torch.randn(2, 8, 6, 6)]
        base = float(latent_cosine_loss(predicted, target))
        assert base > 0.5
        for scale in (1e-4, 0.1, 10.0, 1e4):
            scaled = float(latent_cosine_loss([scale * predicted[0]], [scale * target[0]]))
            assert scaled == pytest.approx(base, rel=1e-4)
            assert float(latent_cosine_loss([scale * predicted[0]], target)) == pytest.approx(base, rel=1e-4)

    def test_constant_features_do_not_match(self) -> None:
        """A collapsed (constant) prediction is not rewarded: per-level mean removal leaves nothing to align."""
        target = [torch.randn(2, 8, 6, 6)]
        collapsed = [torch.ones(2, 8, 6, 6)]
        assert float(latent_cosine_loss(collapsed, target)) == pytest.approx(1.0, abs=1e-4)

    def test_objective_zero_for_identical_images(self) -> None:
        model = BDIRNet(TINY)
        objective = BDIRNetObjective(model, LossConfig(latent_warmup_steps=0))
        image = torch.rand(2, 3, 16, 16)
        term = objective.latent_term(model.forward_train(image, image), image)
        assert term is not None and float(term.detach()) == pytest.approx(0.0, abs=1e-5)

    def test_latent_min_level_compares_only_the_deeper_levels(self) -> None:
        model = BDIRNet(TINY)
        deep = BDIRNetObjective(model, LossConfig(latent_warmup_steps=0, latent_min_level=1))
        assert len(deep.predictors) == TINY.levels  # levels 1..L, no head for the full-resolution skip
        sharp = torch.rand(2, 3, 16, 16)
        blurred = sharp.clone()
        blurred[..., :2, :2] = 0.0  # a change the full-resolution level sees
        outputs = model.forward_train(blurred, sharp)
        every = BDIRNetObjective(model, LossConfig(latent_warmup_steps=0))
        term_all, term_deep = every.latent_term(outputs, sharp), deep.latent_term(outputs, sharp)
        assert term_all is not None and term_deep is not None and float(term_deep) != float(term_all)
        with pytest.raises(ValueError, match=r"latent_min_level 3 > model\.levels 2"):
            BDIRNetObjective(model, LossConfig(latent_min_level=3))

    def test_infonce_prefers_matching_pairs(self) -> None:
        codes = torch.randn(4, 16)
        assert float(infonce_loss(codes, codes)) < float(infonce_loss(codes, codes.roll(1, dims=0)))


def test_total_loss_weights() -> None:
    config = LossConfig(autoencode_weight=0.5, latent_weight=2.0, latent_warmup_steps=10, fft_weight=0.25)
    terms = {name: torch.tensor(1.0) for name in ("restore", "autoencode", "latent", "fft")}
    assert float(total_loss(terms, config, step=5).total) == pytest.approx(1 + 0.5 + 2.0 * 0.5 + 0.25)
    result = total_loss(terms, config, step=100)
    assert float(result.total) == pytest.approx(1 + 0.5 + 2.0 + 0.25)
    assert result.parts["loss_latent"] == 1.0
    assert latent_warmup(0, 10) == 0.0 and latent_warmup(10, 10) == 1.0 and latent_warmup(3, 0) == 1.0
    with pytest.raises(ValueError, match="must include 'restore'"):
        total_loss({"latent": torch.tensor(1.0)}, config, 0)


def test_transfer_objective_needs_no_sharp_branch() -> None:
    model = BDIRNet(ModelConfig.transfer_baseline(TINY))
    objective = BDIRNetObjective(model, LossConfig(autoencode_weight=0.0, latent_weight=0.0))
    assert not objective.needs_sharp_branch and objective.target_encoder is None
    assert sum(p.numel() for p in objective.parameters()) == 0


class TestMultiScale:
    """Deep supervision of the coarser decoder levels (``train.loss.multiscale_weight``)."""

    def test_gradcheck(self) -> None:
        heads = torch.nn.ModuleList([torch.nn.Conv2d(4, 3, 3, padding=1)]).double()
        assert torch.autograd.gradcheck(
            lambda f, b, s: multiscale_loss(heads, [f], b, s), (f64(1, 4, 2, 2), f64(1, 3, 4, 4), f64(1, 3, 4, 4))
        )

    def test_starts_at_the_pooled_blurred_image_and_trains_every_head(self) -> None:
        config = ModelConfig(width_channels=8, levels=3)
        torch.manual_seed(0)
        model = BDIRNet(config)
        objective = BDIRNetObjective(model, LossConfig(latent_weight=0.0, multiscale_weight=0.5))
        blurred, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        outputs = model.forward_train(blurred, None)
        assert [tuple(f.shape) for f in outputs.coarse_features] == [(2, 32, 8, 8), (2, 16, 16, 16)]
        assert model.coarse_channels() == [32, 16]
        result = objective(outputs, sharp, 0, blurred)
        # Zero heads: each level predicts the blurred image pooled to its side, against the sharp one pooled alike.
        expected = torch.stack([charbonnier(F.avg_pool2d(blurred, k), F.avg_pool2d(sharp, k)) for k in (4, 2)]).mean()
        assert result.parts["loss_multiscale"] == pytest.approx(float(expected), rel=1e-5)
        assert float(result.total) == pytest.approx(result.parts["loss_restore"] + 0.5 * float(expected), rel=1e-5)
        result.total.backward()
        for head in objective.coarse_heads:
            assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0

    def test_off_by_default_adds_no_parameters(self) -> None:
        objective = BDIRNetObjective(BDIRNet(TINY), LossConfig())
        assert not hasattr(objective, "coarse_heads")
        assert not any("coarse" in name for name in objective.state_dict())

    def test_refused_without_coarser_levels(self) -> None:
        with pytest.raises(ValueError, match=r"multiscale_weight > 0 needs a network with coarser decoder levels"):
            BDIRNetObjective(BDIRNet(ModelConfig(width_channels=8, levels=1)), LossConfig(multiscale_weight=0.5))
        objective = BDIRNetObjective(BDIRNet(TINY), LossConfig(multiscale_weight=0.5))
        outputs = BDIRNet(TINY).forward_train(torch.rand(1, 3, 16, 16), None)
        with pytest.raises(ValueError, match="needs the blurred batch"):
            objective(outputs, torch.rand(1, 3, 16, 16), 0)
