from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from bdirnet import BDIRNet, ModelConfig
from bdirnet.config import BLOCKS, ConfigError, LossConfig, TrainConfig
from bdirnet.engine import build_optimizer, train_step
from bdirnet.losses import BDIRNetObjective, TrainingModule, charbonnier
from bdirnet.model import (
    ARCHITECTURES,
    BLOCK_TYPES,
    SAID,
    SAIR,
    Latents,
    NAFBlock,
    TrainOutputs,
    build_model,
    count_parameters,
    forward_flops,
    instance_stats,
    register_architecture,
)
from bdirnet.weights import load_weights, save_weights

TINY = ModelConfig(width_channels=8, levels=2)


class TestBDIRNet:
    @pytest.mark.parametrize("block", ["residual", "nafnet"])
    @pytest.mark.parametrize("shape", [(1, 3, 67, 91), (2, 3, 32, 48), (3, 3, 5, 7), (1, 3, 1, 1)])
    def test_any_size_and_identity_at_initialisation(self, shape: tuple[int, int, int, int], block: str) -> None:
        """Any H×W comes back at its size; untrained, the network is the identity (pad, encode, decode, crop
        lose nothing), which is where training starts from (README: identity initialisation), with either block."""
        model = BDIRNet(dataclasses.replace(TINY, block=block)).eval()
        image = torch.rand(shape)
        with torch.no_grad():
            restored = model(image)
        assert restored.shape == image.shape
        assert float((restored - image).abs().max()) < 1e-5

    @pytest.mark.parametrize("levels", [1, 3])
    @pytest.mark.parametrize("blocks", [0, 2])
    def test_configurable(self, levels: int, blocks: int) -> None:
        config = ModelConfig(width_channels=6, levels=levels, encoder_blocks=blocks, decoder_blocks=blocks)
        model = BDIRNet(config)
        latents = model.encode(torch.rand(2, 3, 32, 32))
        assert len(latents.skips) == levels
        assert latents.bottleneck.shape == (2, 6 * 2**levels, 32 // 2**levels, 32 // 2**levels)
        assert model(torch.rand(1, 3, 33, 35)).shape == (1, 3, 33, 35)

    def test_padding_is_reflect_and_cropped_back(self, coffee: torch.Tensor) -> None:
        """A 30×30 input is reflect-padded to 32 (2**levels) and cropped back. The weights are perturbed so the
        network is not the identity: then the border depends on how it was padded."""
        model = BDIRNet(TINY).eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            image = coffee[..., 100:130, 200:230]
            restored = model(image)
            reflect = model(torch.nn.functional.pad(image, (0, 2, 0, 2), mode="reflect"))[..., :30, :30]
            zeros = model(torch.nn.functional.pad(image, (0, 2, 0, 2)))[..., :30, :30]
        assert float((restored - image).abs().mean()) > 0.01, "the perturbed network must change the image"
        assert torch.allclose(restored, reflect, atol=1e-5)
        assert not torch.allclose(restored, zeros, atol=1e-3)

    def test_forward_train(self) -> None:
        model = BDIRNet(TINY)
        blurred, sharp = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        outputs = model.forward_train(blurred, sharp)
        assert outputs.restored_from_blurred.shape == blurred.shape
        assert outputs.restored_from_sharp is not None and outputs.latents_sharp is not None
        assert [f.shape[1] for f in outputs.latents_blurred.levels()] == [8, 16, 32]
        # The stacked pass equals two separate passes (all normalisation is per sample).
        alone = model.decode(model.encode(sharp), sharp)
        assert torch.allclose(outputs.restored_from_sharp, alone, atol=1e-5)
        only_blurred = model.forward_train(blurred, None)
        assert only_blurred.restored_from_sharp is None and only_blurred.latents_sharp is None
        assert torch.allclose(only_blurred.restored_from_blurred, outputs.restored_from_blurred, atol=1e-5)
        # Through the training module (what DDP wraps): the same restoration is what the loss sees.
        module = TrainingModule(model, LossConfig(latent_warmup_steps=0, autoencode_weight=0.0))
        assert float(module(blurred, sharp, 0).parts["loss_restore"]) == pytest.approx(
            float(charbonnier(outputs.restored_from_blurred, sharp)), rel=1e-5
        )

    def test_forward_train_rejects_unpadded_patches(self) -> None:
        with pytest.raises(ValueError, match="multiples of 4"):
            BDIRNet(TINY).forward_train(torch.rand(1, 3, 30, 32), None)

    def test_bad_input_named(self) -> None:
        with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, H, W\), got \(1, 1, 8, 8\)"):
            BDIRNet(TINY)(torch.rand(1, 1, 8, 8))

    def test_no_global_residual_by_default(self) -> None:
        """BDIRNet reconstructs from the latent: zeroing RecNet's output layer gives 0, not the input."""
        model = BDIRNet(TINY).eval()
        torch.nn.init.zeros_(model.decoder.to_rgb.weight)
        torch.nn.init.zeros_(model.decoder.to_rgb.bias)
        image = torch.rand(1, 3, 16, 16)
        assert torch.equal(model(image), torch.zeros_like(image))
        residual = BDIRNet(dataclasses.replace(TINY, global_residual=True)).eval()
        residual.load_state_dict(model.state_dict())
        assert torch.allclose(residual(image), image)

    @pytest.mark.parametrize("width", [8, 16, 32])
    def test_transfer_baseline_parameter_parity(self, width: int) -> None:
        config = ModelConfig(width_channels=width)
        full = count_parameters(BDIRNet(config))
        baseline = count_parameters(BDIRNet(ModelConfig.transfer_baseline(config)))
        assert abs(full - baseline) / full < 0.05

    def test_parameters_are_the_inference_network(self) -> None:
        """Training-only modules (EMA target, predictors) live in the objective, not in the model."""
        model = BDIRNet(TINY)
        before = {name for name, _ in model.named_parameters()}
        objective = BDIRNetObjective(model, LossConfig())
        assert {name for name, _ in model.named_parameters()} == before
        assert all(name.startswith(("encoder.", "decoder.")) for name in before)
        assert count_parameters(objective) > 0
        # Every model parameter gets a gradient from model(blurred) (no dead parameters; DDP needs that).
        model(torch.rand(1, 3, 16, 16)).mean().backward()
        assert all(p.grad is not None for p in model.parameters())

    def test_flops_and_parameters_reported(self) -> None:
        model = BDIRNet(ModelConfig())
        assert 100_000 < count_parameters(model) < 5_000_000
        assert forward_flops(model, 64, 64) * 4 == pytest.approx(forward_flops(model, 128, 128), rel=0.01)


class TestSAID:
    def test_normalises_instance_statistics_of_any_input(self, astronaut: torch.Tensor, coffee: torch.Tensor) -> None:
        """What SAID does, measured: it removes per-image feature statistics from its normalised half, so the
        statistics of *any* two inputs move closer. Not blur-specific: a blurred copy and an unrelated photo
        come closer by about the same factor (0.545 vs 0.541 in an earlier measurement), so the test claims no
        more than that; whether the blur-invariance helps is for the study's ablation (no_said) to show."""
        from bdirnet.degrade import degrade

        sharp = astronaut[..., 100:228, 150:278]
        blurred, _ = degrade(sharp, "defocus", seed=0, noise_sigma_max=0.0)
        unrelated = coffee[..., 100:228, 150:278]
        stem = torch.nn.Conv2d(3, 16, 3, padding=1)  # realistic input features: edge and colour filters
        said = SAID(16)
        with torch.no_grad():
            features = {name: stem(x) for name, x in (("sharp", sharp), ("blurred", blurred), ("other", unrelated))}
            normalised = {name: said(f) for name, f in features.items()}

        def stats_gap(a: torch.Tensor, b: torch.Tensor) -> float:
            (mean_a, std_a), (mean_b, std_b) = instance_stats(a), instance_stats(b)
            return float(((mean_a - mean_b).abs() + (std_a - std_b).abs()).sum())

        ratios = {
            other: stats_gap(normalised["sharp"], normalised[other]) / stats_gap(features["sharp"], features[other])
            for other in ("blurred", "other")
        }
        assert ratios["blurred"] < 0.75 and ratios["other"] < 0.75, ratios
        assert abs(ratios["blurred"] - ratios["other"]) < 0.15, ratios  # the same mechanism for both

    def test_off_is_plain_conv(self) -> None:
        said = SAID(8, enabled=False)
        x = torch.rand(2, 8, 5, 5)
        assert torch.allclose(said(x), said.mix(x))

    def test_gradcheck(self) -> None:
        said = SAID(4).double()
        x = torch.rand(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(said, (x,))

    def test_odd_channels_rejected(self) -> None:
        with pytest.raises(ValueError, match="even channel count, got 5"):
            SAID(5)


class TestSAIR:
    def test_reinjects_bottleneck_statistics(self) -> None:
        sair = SAIR(8, bottleneck_channels=16)
        torch.nn.init.normal_(sair.predict.weight)
        x = torch.rand(2, 8, 6, 6)
        z = torch.rand(2, 16, 3, 3)
        # The output follows the bottleneck's statistics ...
        assert not torch.allclose(sair(x, z), sair(x, 3 * z))
        # ... and not the modulated half's own statistics, which are normalised away (W starts as identity).
        rescaled = x.clone()
        rescaled[:, :4] = 5.0 * rescaled[:, :4] + 1.0
        assert torch.allclose(sair(x, z)[:, :4], sair(rescaled, z)[:, :4], atol=1e-3)
        assert torch.equal(sair(x, z)[:, 4:], x[:, 4:])

    def test_off_keeps_no_bottleneck_path(self) -> None:
        sair = SAIR(8, bottleneck_channels=16, enabled=False)
        torch.nn.init.normal_(sair.predict.weight)
        x = torch.rand(2, 8, 6, 6)
        assert torch.equal(sair(x, torch.rand(2, 16, 3, 3)), sair(x, torch.rand(2, 16, 3, 3)))

    def test_gradcheck(self) -> None:
        sair = SAIR(4, bottleneck_channels=8).double()
        torch.nn.init.normal_(sair.predict.weight)
        x = torch.rand(1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
        z = torch.rand(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(sair, (x, z))


class _EdgeEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, image: torch.Tensor) -> Latents:
        return Latents(skips=[], bottleneck=self.conv(image))


class _TwoConvNet(torch.nn.Module):
    """A minimal non-BDIRNet architecture: one latent level, no SAID/SAIR, no padding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _EdgeEncoder()
        self.decoder = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, blurred: torch.Tensor) -> torch.Tensor:
        return (blurred + self.decoder(self.encoder(blurred).bottleneck)).clamp(0, 1)

    def forward_train(self, blurred: torch.Tensor, sharp: torch.Tensor | None) -> TrainOutputs:
        latents = self.encoder(blurred)
        return TrainOutputs(blurred + self.decoder(latents.bottleneck), None, latents, None)

    def latent_channels(self) -> list[int]:
        return [8]


def test_a_registered_architecture_trains_through_the_objective(tmp_path: Path) -> None:
    """A new architecture is a class + ``model.arch``: the objective, training step and weights file take it."""
    register_architecture("two_conv_test")(_TwoConvNet)
    try:
        config = ModelConfig(arch="two_conv_test")
        network = build_model(config)
        module = TrainingModule(network, LossConfig(latent_warmup_steps=0, latent_weight=1.0))
        optimizer, _ = build_optimizer(module, TrainConfig(), total_steps=2)
        sharp = torch.rand(2, 3, 12, 12)
        before = network.decoder.weight.detach().clone()
        result = train_step(module, optimizer, sharp.roll(1, dims=-1), sharp, step=0)
        assert "loss_latent" in result.parts and not torch.equal(before, network.decoder.weight)
        save_weights(tmp_path / "w.pt", network, {"variant": "x"})
        loaded, _ = load_weights(tmp_path / "w.pt")
        assert isinstance(loaded, _TwoConvNet) and torch.equal(loaded(sharp), network.eval()(sharp))
    finally:
        ARCHITECTURES.pop("two_conv_test")
    with pytest.raises(ConfigError, match=r"model\.arch 'two_conv_test' is not a registered architecture"):
        build_model(ModelConfig(arch="two_conv_test"))


def test_every_block_name_has_a_class() -> None:
    assert tuple(BLOCK_TYPES) == BLOCKS


def test_an_unknown_block_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"model.block must be one of \['residual', 'nafnet'\], got 'resnet'"):
        ModelConfig(block="resnet")


def test_nafnet_blocks_train_every_branch() -> None:
    """A NAFNet-block BDIRNet starts as the identity with beta = gamma = 0 (and zero-initialised upsampling), so the
    gradient reaches the deeper blocks' inner parameters only once the layers after them have moved; by the third
    step every parameter of every block (attention, gate convs, norms) gets one, so no branch is dead."""
    model = BDIRNet(dataclasses.replace(TINY, block="nafnet"))
    module = TrainingModule(model, LossConfig())
    optimizer, _ = build_optimizer(module, TrainConfig(lr=1e-2), 10)
    generator = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 32, 32, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, 1, 1)
    for step in range(3):
        train_step(module, optimizer, blurred, sharp, step, bf16=False, grad_clip_norm=1.0)
    blocks = [m for m in model.modules() if isinstance(m, NAFBlock)]
    assert len(blocks) == 2 * TINY.levels + 1
    for block in blocks:
        assert float(block.beta.abs().sum()) > 0 and float(block.gamma.abs().sum()) > 0
        for name, parameter in block.named_parameters():
            assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name
