"""BDIRNet: DistillNet (encoder with SAID) and RecNet (decoder with SAIR).

Our reconstruction of Niu et al., "Deep robust image deblurring via blur distilling and information comparison
in latent space" (Neurocomputing 466, 2021) from its abstract, in the line of Nimisha et al. (ICCV 2017); see
DESIGN.md §1. The layer-level design is ours, every piece is a switch in :class:`~bdirnet.config.ModelConfig`.

- :class:`DistillNet` ``E``: stem conv, then ``levels`` levels of residual blocks at widths ``C * 2**l``, a
  strided-conv downsample after each, and a bottleneck at ``C * 2**levels``; a :class:`SAID` module closes every
  level and the bottleneck. Shared by the blurred and the sharp image.
- :class:`RecNet` ``D``: the mirrored decoder (pixel-shuffle upsample, add the skip, residual blocks) with a
  :class:`SAIR` module per level that re-injects statistics predicted from the bottleneck. The image is
  reconstructed from the distilled information: ``restored = D(E(blurred))``.
- :class:`BDIRNet`: the inference network. ``model(blurred)`` pads to a multiple of ``2**levels`` (reflect),
  restores, crops back and clamps to [0, 1]; :meth:`BDIRNet.forward_train` returns what the loss needs.

Training-only parts (the EMA target encoder, predictor and projection heads) live in
:class:`bdirnet.losses.BDIRNetObjective`, so ``BDIRNet.parameters()`` are exactly what inference uses.

Architectures are looked up by name (``model.arch``) in :data:`ARCHITECTURES`; :func:`build_model` is the one
constructor the pipeline uses. A new architecture is an ``nn.Module`` class taking a ``ModelConfig``, decorated
with ``@register_architecture("name")``, that provides what the objective asks for (:class:`LatentNetwork`):
``forward(blurred)``, ``forward_train(blurred, sharp)``, ``latent_channels()`` and an ``encoder`` module; put it in
its own file and import that file at the end of this one, so every stage that builds models depends on it.

Example:
    >>> import torch
    >>> from bdirnet import BDIRNet, ModelConfig
    >>> model = BDIRNet(ModelConfig(width_channels=8, levels=2)).eval()
    >>> model(torch.rand(1, 3, 67, 91)).shape
    torch.Size([1, 3, 67, 91])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdirnet.config import ConfigError, ModelConfig

ModuleT = TypeVar("ModuleT", bound=type[nn.Module])

ARCHITECTURES: dict[str, Callable[[ModelConfig], nn.Module]] = {}
"""Every network the pipeline can build, by the name ``model.arch`` gives."""


def register_architecture(name: str) -> Callable[[ModuleT], ModuleT]:
    """Class decorator: make ``cls(config)`` buildable as ``model.arch: <name>``."""

    def register(cls: ModuleT) -> ModuleT:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = cls
        return cls

    return register


def build_model(config: ModelConfig) -> nn.Module:
    """The network of ``config.arch`` (see :data:`ARCHITECTURES`)."""
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch {config.arch!r} is not a registered architecture; expected one of "
                          f"{sorted(ARCHITECTURES)}")  # fmt: skip
    return ARCHITECTURES[config.arch](config)


def instance_stats(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and standard deviation over H×W: two ``(N, C, 1, 1)`` tensors."""
    mean = features.mean(dim=(2, 3), keepdim=True)
    std = (features.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return mean, std


def zero_init(layer: nn.Conv2d | nn.Linear) -> None:
    """Set a layer's weight and bias to zero (the layer starts as a no-op branch)."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def identity_init(conv: nn.Conv2d) -> None:
    """Set a square 1×1 conv to the identity map."""
    with torch.no_grad():
        conv.weight.copy_(torch.eye(conv.out_channels, conv.in_channels)[:, :, None, None])
        if conv.bias is not None:
            conv.bias.zero_()


StatisticsSource = Callable[[nn.Module | None, str, Tensor], tuple[Tensor, Tensor]]
"""``source(layer, slot, features) -> (mean, std)``: where a normalisation takes its statistics from (see
:func:`statistics_from`). ``layer`` is the SAID/SAIR module, or ``None`` for the bottleneck every SAIR shares."""

_STATISTICS: ContextVar[StatisticsSource | None] = ContextVar("bdirnet_statistics", default=None)


@contextmanager
def statistics_from(source: StatisticsSource) -> Iterator[None]:
    """Inside this context every SAID/SAIR normalisation takes its ``(mean, std)`` from ``source`` instead of the
    features' own instance statistics: how tiled inference gives each tile the statistics of the whole image
    (:func:`bdirnet.deblur.restore` with ``statistics="image"``). Outside, nothing changes."""
    token = _STATISTICS.set(source)
    try:
        yield
    finally:
        _STATISTICS.reset(token)


def layer_stats(layer: nn.Module | None, slot: str, features: Tensor) -> tuple[Tensor, Tensor]:
    """The ``(mean, std)`` a normalisation uses: the features' :func:`instance_stats`, or the active
    :func:`statistics_from` source's."""
    source = _STATISTICS.get()
    if source is None:
        return instance_stats(features)
    return source(layer, slot, features)


class ResidualBlock(nn.Module):
    """``x + conv3x3(act(conv3x3(x)))`` at constant width; the second conv starts at zero (an identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.GELU()
        zero_init(self.conv2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel (NAFNet's), with a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        variance = (x - mean).pow(2).mean(dim=1, keepdim=True)
        return (x - mean) / (variance + self.eps).sqrt() * self.weight + self.bias


class NAFBlock(nn.Module):
    """NAFNet's block (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) at constant width.

    ``y = x + beta * conv1x1(SCA(SG(dwconv3x3(conv1x1(LN(x))))))``, then ``y + gamma * conv1x1(SG(conv1x1(LN(y))))``:
    SimpleGate ``SG`` multiplies the two halves of the channels instead of an activation; simplified channel
    attention ``SCA`` scales each channel by a 1×1 conv of its spatial mean. ``beta`` and ``gamma`` start at zero,
    so the block starts as the identity, like :class:`ResidualBlock`. The spatial mean is taken through
    :func:`layer_stats`, so tiled inference gives each tile the whole image's (:func:`statistics_from`).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = 2 * channels
        self.norm1 = LayerNorm2d(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.attention = nn.Conv2d(channels, channels, 1)
        self.project = nn.Conv2d(channels, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.ffn_expand = nn.Conv2d(channels, hidden, 1)
        self.ffn_project = nn.Conv2d(channels, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @staticmethod
    def simple_gate(x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=1)
        return first * second

    def forward(self, x: Tensor) -> Tensor:
        h = self.simple_gate(self.depthwise(self.expand(self.norm1(x))))
        mean, _ = layer_stats(self, "attention", h)
        y = x + self.beta * self.project(h * self.attention(mean))
        return y + self.gamma * self.ffn_project(self.simple_gate(self.ffn_expand(self.norm2(y))))


BLOCK_TYPES: dict[str, type[ResidualBlock] | type[NAFBlock]] = {"residual": ResidualBlock, "nafnet": NAFBlock}
"""The class of each ``model.block`` name (:data:`bdirnet.config.BLOCKS`, which validates it); each starts as the
identity."""


class SAID(nn.Module):
    """Statistical anti-interference distilling: strip blur-dependent feature statistics.

    Blur changes the per-channel *statistics* of features (lower variance in edge channels) more than their
    structure. SAID instance-normalises the first half of the channels per sample (HINet-style, learned
    affine), scales the other half by a learned per-channel gate (how much raw statistics may pass), and
    mixes both with a 1×1 conv: ``y = W [IN(x_a); g * x_b] + b``.

    With ``enabled=False`` it is the plain 1×1 conv ``y = W x + b`` (the transfer baseline; it lacks only the
    ``1.5 C`` gate and affine parameters).

    Shape:
        - Input: :math:`(N, C, H, W)`, C even.
        - Output: :math:`(N, C, H, W)`.
    """

    def __init__(self, channels: int, enabled: bool = True) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SAID needs an even channel count, got {channels}")
        self.enabled = enabled
        self.normalised_channels = channels // 2
        self.mix = nn.Conv2d(channels, channels, 1)
        if enabled:  # no unused parameters when off (DDP requires every parameter to get a gradient)
            self.gate = nn.Parameter(torch.ones(1, channels - self.normalised_channels, 1, 1))
            self.norm_weight = nn.Parameter(torch.ones(1, self.normalised_channels, 1, 1))
            self.norm_bias = nn.Parameter(torch.zeros(1, self.normalised_channels, 1, 1))
        identity_init(self.mix)

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return self.mix(x)
        normalised, kept = x.split([self.normalised_channels, x.shape[1] - self.normalised_channels], dim=1)
        mean, std = layer_stats(self, "normalised", normalised)
        normalised = (normalised - mean) / std * self.norm_weight + self.norm_bias
        return self.mix(torch.cat([normalised, self.gate * kept], dim=1))


class SAIR(nn.Module):
    """Statistical anti-interference reconstruction: re-inject clean statistics into decoder features.

    Predicts per-channel ``(gamma, beta)`` from the pooled statistics (mean, std) of the distilled bottleneck
    ``z`` and modulates the instance-normalised first half of the decoder features (AdaIN-like); the other half
    passes; a 1×1 conv mixes: ``y = W [IN(x_a) (1 + gamma) + beta; x_b] + b``.

    With ``enabled=False`` the same-size linear layer predicts ``(gamma, beta)`` from the features' *own* pooled
    statistics (squeeze-excitation-like), without normalising: the transfer baseline keeps the parameters but
    not the re-injection.

    Shape:
        - Input: :math:`(N, C, H, W)` decoder features and :math:`(N, C_z, h, w)` bottleneck.
        - Output: :math:`(N, C, H, W)`.
    """

    def __init__(self, channels: int, bottleneck_channels: int, enabled: bool = True) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SAIR needs an even channel count, got {channels}")
        self.enabled = enabled
        self.modulated_channels = channels // 2
        source_channels = bottleneck_channels if enabled else channels
        self.predict = nn.Linear(2 * source_channels, 2 * self.modulated_channels)
        self.mix = nn.Conv2d(channels, channels, 1)
        zero_init(self.predict)
        identity_init(self.mix)

    def forward(self, x: Tensor, bottleneck: Tensor) -> Tensor:
        # The bottleneck's statistics are one quantity, shared by every SAIR (layer None); the baseline's own.
        mean, std = layer_stats(None, "bottleneck", bottleneck) if self.enabled else layer_stats(self, "source", x)
        gamma, beta = self.predict(torch.cat([mean, std], dim=1).flatten(1)).chunk(2, dim=1)
        gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        modulated, kept = x.split([self.modulated_channels, x.shape[1] - self.modulated_channels], dim=1)
        if self.enabled:
            own_mean, own_std = layer_stats(self, "modulated", modulated)
            modulated = (modulated - own_mean) / own_std * (1.0 + gamma) + beta
        else:
            modulated = modulated * (1.0 + gamma) + beta
        return self.mix(torch.cat([modulated, kept], dim=1))


IMAGE_STATISTICS_LAYERS: tuple[type[nn.Module], ...] = (SAID, SAIR, NAFBlock)
"""Layers that read per-image statistics through :func:`layer_stats`: tiled inference with ``statistics="image"``
gathers theirs over the whole image."""


@dataclass
class Latents:
    """What DistillNet returns: skip features per level (finest first) and the bottleneck."""

    skips: list[Tensor]
    bottleneck: Tensor

    def levels(self) -> list[Tensor]:
        """Every compared feature map: the skips, then the bottleneck."""
        return [*self.skips, self.bottleneck]


class DistillNet(nn.Module):
    """The shared encoder E: stem, ``levels`` levels + bottleneck, each closed by SAID."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.width_channels
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        with torch.no_grad():  # RGB pass-through in the first kept (not normalised) channels; see RecNet
            for rgb in range(min(3, width - width // 2)):
                self.stem.weight[width // 2 + rgb].zero_()
                self.stem.weight[width // 2 + rgb, rgb, 1, 1] = 1.0
        assert self.stem.bias is not None
        with torch.no_grad():
            self.stem.bias[width // 2 : width // 2 + 3] = 0.0
        self.stages = nn.ModuleList()
        self.distill = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level in range(config.levels + 1):
            channels = width * 2**level
            blocks = [BLOCK_TYPES[config.block](channels) for _ in range(config.encoder_blocks)]
            self.stages.append(nn.Sequential(*blocks))
            self.distill.append(SAID(channels, enabled=config.said))
            if level < config.levels:
                self.downsample.append(nn.Conv2d(channels, 2 * channels, 2, stride=2))

    def forward(self, image: Tensor) -> Latents:
        x = self.stem(image)
        skips: list[Tensor] = []
        for level, (stage, distill) in enumerate(zip(self.stages, self.distill, strict=True)):
            x = distill(stage(x))
            if level == len(self.downsample):
                break
            skips.append(x)
            x = self.downsample[level](x)
        return Latents(skips=skips, bottleneck=x)


class RecNet(nn.Module):
    """The decoder D: upsample, add the skip, residual blocks, SAIR; then a 3×3 conv to RGB."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.width_channels
        bottleneck_channels = width * 2**config.levels
        self.upsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.reinject = nn.ModuleList()
        for level in reversed(range(config.levels)):
            channels = width * 2**level
            expand = nn.Conv2d(2 * channels, 4 * channels, 1, bias=False)
            zero_init(expand)
            self.upsample.append(nn.Sequential(expand, nn.PixelShuffle(2)))
            blocks = [BLOCK_TYPES[config.block](channels) for _ in range(config.decoder_blocks)]
            self.stages.append(nn.Sequential(*blocks))
            self.reinject.append(SAIR(channels, bottleneck_channels, enabled=config.sair))
        self.to_rgb = nn.Conv2d(width, 3, 3, padding=1)
        zero_init(self.to_rgb)
        with torch.no_grad():
            if not config.global_residual:
                # Start as the identity through the pass-through half of the full-resolution skip: the stem
                # writes RGB into channels C/2..C/2+2 (see DistillNet), every residual block, SAID/SAIR mix and
                # the upsample start as identities or zero, so D(E(b)) = b at step 0 and training learns the
                # correction. This is an initialisation, not a residual: the output is computed from the
                # distilled latent and nothing ties it to b once the weights move.
                for rgb in range(3):
                    self.to_rgb.weight[rgb, width // 2 + rgb, 1, 1] = 1.0

    def features(self, latents: Latents, keep_coarse: bool = True) -> tuple[Tensor, list[Tensor]]:
        """The full-resolution features and, with ``keep_coarse``, those after each coarser level (coarsest first);
        inference passes ``False`` so that no coarse map outlives its level (tiled 12 MP photos)."""
        x = latents.bottleneck
        coarse: list[Tensor] = []
        for upsample, stage, reinject, skip in zip(
            self.upsample, self.stages, self.reinject, reversed(latents.skips), strict=True
        ):
            if keep_coarse and x is not latents.bottleneck:
                coarse.append(x)
            x = reinject(stage(upsample(x) + skip), latents.bottleneck)
        return x, coarse

    def forward(self, latents: Latents) -> Tensor:
        output: Tensor = self.to_rgb(self.features(latents, keep_coarse=False)[0])
        return output


@dataclass
class TrainOutputs:
    """What the training objective needs from one (blurred, sharp) batch."""

    restored_from_blurred: Tensor
    restored_from_sharp: Tensor | None
    latents_blurred: Latents
    latents_sharp: Latents | None
    # The blurred branch's decoder features at each coarser scale (coarsest first; each level halves the side),
    # for the multi-scale loss; empty when the network has none.
    coarse_features: list[Tensor] = field(default_factory=list)


@runtime_checkable
class LatentNetwork(Protocol):
    """What the training objective asks of a network: inference, the training forward with latents, the
    channels of each compared latent level (finest first, bottleneck last) and the encoder to keep an EMA copy of."""

    config: ModelConfig
    encoder: nn.Module

    def __call__(self, blurred: Tensor) -> Tensor: ...

    def forward_train(self, blurred: Tensor, sharp: Tensor | None) -> TrainOutputs: ...

    def latent_channels(self) -> list[int]: ...


@runtime_checkable
class MultiScaleNetwork(Protocol):
    """A network whose ``forward_train`` fills :attr:`TrainOutputs.coarse_features` (the multi-scale loss)."""

    def coarse_channels(self) -> list[int]: ...


@register_architecture("bdirnet")
class BDIRNet(nn.Module):
    """The inference network ``restored = D(E(blurred))`` (plus ``blurred`` when ``global_residual``).

    Args:
        config: architecture and switches; see :class:`~bdirnet.config.ModelConfig`.

    Shape:
        - Input: :math:`(N, 3, H, W)` float in [0, 1], any H and W.
        - Output: :math:`(N, 3, H, W)` in [0, 1].
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.encoder = DistillNet(self.config)
        self.decoder = RecNet(self.config)
        self.multiple = 2**self.config.levels

    def _pad(self, image: Tensor) -> tuple[Tensor, int, int]:
        height, width = image.shape[-2:]
        pad_h = (-height) % self.multiple
        pad_w = (-width) % self.multiple
        if pad_h or pad_w:
            # reflect needs pad < size; replicate covers tiny inputs.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            image = F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
        return image, height, width

    def encode(self, image: Tensor) -> Latents:
        """E(image) on an input whose sides are multiples of ``2**levels``."""
        latents: Latents = self.encoder(image)
        return latents

    def decode(self, latents: Latents, blurred: Tensor | None = None) -> Tensor:
        """D(latents), plus ``blurred`` when the global residual is on (unclamped)."""
        return self._decode_levels(latents, blurred, keep_coarse=False)[0]

    def _decode_levels(
        self, latents: Latents, blurred: Tensor | None, keep_coarse: bool = True
    ) -> tuple[Tensor, list[Tensor]]:
        """:meth:`decode` and the decoder's coarser-scale features (coarsest first; empty without ``keep_coarse``)."""
        full, coarse = self.decoder.features(latents, keep_coarse)
        restored: Tensor = self.decoder.to_rgb(full)
        if self.config.global_residual:
            if blurred is None:
                raise ValueError("decode: global_residual needs the blurred input")
            restored = restored + blurred
        return restored, coarse

    def restore(self, blurred: Tensor) -> Tensor:
        """Unclamped restoration at any H×W (pads, restores, crops back); differentiable."""
        _check_images(blurred, "BDIRNet")
        padded, height, width = self._pad(blurred)
        return self.decode(self.encode(padded), padded)[..., :height, :width]

    def forward(self, blurred: Tensor) -> Tensor:
        """Inference: the restored image in [0, 1]."""
        return self.restore(blurred).clamp(0.0, 1.0)

    def latent_channels(self) -> list[int]:
        """Channels of every level :meth:`Latents.levels` returns: the skips (finest first), then the bottleneck."""
        width = self.config.width_channels
        return [width * 2**level for level in range(self.config.levels + 1)]

    def coarse_channels(self) -> list[int]:
        """Channels of each of :attr:`TrainOutputs.coarse_features` (coarsest first)."""
        width = self.config.width_channels
        return [width * 2**level for level in reversed(range(1, self.config.levels))]

    def forward_train(self, blurred: Tensor, sharp: Tensor | None) -> TrainOutputs:
        """Both branches for the objective: D(E(b)), D(E(s)) and the latents of both.

        ``sharp=None`` skips the sharp branch (the transfer baseline needs only D(E(b))). Inputs must already
        have sides that are multiples of ``2**levels`` (training patches do).
        """
        _check_images(blurred, "BDIRNet.forward_train")
        if blurred.shape[-2] % self.multiple or blurred.shape[-1] % self.multiple:
            raise ValueError(
                f"forward_train: patch sides must be multiples of {self.multiple}, got {tuple(blurred.shape[-2:])}"
            )
        if sharp is None:
            latents_blurred = self.encode(blurred)
            restored, coarse = self._decode_levels(latents_blurred, blurred)
            return TrainOutputs(restored, None, latents_blurred, None, coarse)
        if sharp.shape != blurred.shape:
            raise ValueError(f"forward_train: sharp {tuple(sharp.shape)} and blurred {tuple(blurred.shape)} differ")
        # One pass over the stacked batch: every normalisation in E and D is per sample, so this equals two
        # separate passes and runs faster.
        both = torch.cat([blurred, sharp])
        latents = self.encode(both)
        restored, coarse = self._decode_levels(latents, both)
        n = blurred.shape[0]
        latents_blurred = Latents([f[:n] for f in latents.skips], latents.bottleneck[:n])
        latents_sharp = Latents([f[n:] for f in latents.skips], latents.bottleneck[n:])
        return TrainOutputs(restored[:n], restored[n:], latents_blurred, latents_sharp, [f[:n] for f in coarse])


def _check_images(images: Tensor, where: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{where}: expected floating-point images in [0, 1], got dtype {images.dtype}")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def forward_flops(model: nn.Module, height: int, width: int) -> int:
    """FLOPs of one forward pass on a ``(1, 3, height, width)`` input (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = torch.zeros(1, 3, height, width, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(probe)
    return int(counter.get_total_flops())
