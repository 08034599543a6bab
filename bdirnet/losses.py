"""The training objective: Charbonnier reconstruction, latent comparison, InfoNCE, FFT-L1, multi-scale.

``L = Charbonnier(D(E(b)), s) + autoencode_weight * Charbonnier(D(E(s)), s)
+ warmup(step) * latent_weight * L_lat + fft_weight * |FFT(D(E(b))) - FFT(s)| + multiscale_weight * L_ms``

``L_ms`` (deep supervision, as MIMO-UNet's multi-scale loss): at each coarser decoder level k (side / 2^k), a 3×3
head turns the features into a correction of the k-times average-pooled blurred image, compared with the pooled
sharp image by Charbonnier; the mean over levels. A 31 px motion streak is 8 px at a quarter of the side, so the
coarse levels get a direct signal for what they must undo. The heads are training-only, like the latent heads.

Latent comparison ("information comparison in latent space", DESIGN.md §1) in a form that can neither
collapse nor explode: the target is an EMA copy of the encoder applied to the sharp image (no gradient),
the blurred branch goes through a small predictor head per level (BYOL style), and the two are compared by
cosine distance per position after per-level normalisation, so scaling the features cannot lower the loss
and the gradient is orthogonal to the features. ``latent_loss: infonce`` instead contrasts pooled
bottleneck codes: positive (b_i, s_i), the other images of the batch as negatives.

All training-only modules (EMA target encoder, predictor and projection heads) live in
:class:`BDIRNetObjective`, not in :class:`~bdirnet.model.BDIRNet`; :class:`TrainingModule` holds the network
and its objective as one module, ``result = module(blurred, sharp, step)`` (nanoGPT's ``logits, loss = model(x, y)``),
which is what DDP wraps: every trainable parameter, the heads' too, is then synchronised by DDP itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bdirnet.config import LossConfig
from bdirnet.model import LatentNetwork, Latents, MultiScaleNetwork, TrainOutputs, zero_init


def _float(x: Tensor) -> Tensor:
    """Loss arithmetic in at least float32 (bf16 autocast outputs), float64 kept (gradcheck)."""
    return x if x.dtype == torch.float64 else x.float()


def charbonnier(restored: Tensor, sharp: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier loss ``mean(sqrt((r - s)^2 + eps^2))`` (a differentiable L1).

    Shape:
        - restored, sharp: :math:`(N, C, H, W)`; output: scalar.
    """
    if restored.shape != sharp.shape:
        raise ValueError(f"charbonnier: restored {tuple(restored.shape)} and sharp {tuple(sharp.shape)} differ")
    diff = _float(restored) - _float(sharp)
    return torch.sqrt(diff * diff + eps * eps).mean()


def fft_l1(restored: Tensor, sharp: Tensor) -> Tensor:
    """Mean absolute difference of the 2-D real FFTs (orthonormal), real and imaginary parts."""
    if restored.shape != sharp.shape:
        raise ValueError(f"fft_l1: restored {tuple(restored.shape)} and sharp {tuple(sharp.shape)} differ")
    diff = torch.fft.rfft2(_float(restored), norm="ortho") - torch.fft.rfft2(_float(sharp), norm="ortho")
    return torch.view_as_real(diff).abs().mean()


def multiscale_loss(
    heads: nn.ModuleList, features: list[Tensor], blurred: Tensor, sharp: Tensor, eps: float = 1e-3
) -> Tensor:
    """Mean over the coarser decoder levels of ``Charbonnier(head(f) + pool(b), pool(s))``.

    ``features`` are coarsest first, each twice the side of the one before, the finest at half the image's side;
    ``pool`` is average pooling to each level's side.
    """
    if len(heads) != len(features) or not features:
        raise ValueError(f"multiscale_loss: {len(heads)} heads for {len(features)} decoder levels")
    total = _float(sharp).new_zeros(())
    for head, level in zip(heads, features, strict=True):
        factor = sharp.shape[-1] // level.shape[-1]
        if factor < 2 or level.shape[-2:] != (sharp.shape[-2] // factor, sharp.shape[-1] // factor):
            raise ValueError(f"multiscale_loss: level {tuple(level.shape)} is no coarser scale of {tuple(sharp.shape)}")
        predicted = _float(head(level)) + F.avg_pool2d(_float(blurred), factor)
        total = total + charbonnier(predicted, F.avg_pool2d(_float(sharp), factor), eps)
    return total / len(features)


def latent_cosine_loss(predicted: list[Tensor], target: list[Tensor]) -> Tensor:
    """Per-level normalised latent distance: mean over levels and positions of ``1 - cos(p, t)``.

    Features are compared per position along channels, after removing each level's per-sample channel mean
    (so a constant offset cannot make two maps agree). The loss is 0 for identical features, lies in [0, 2],
    and is invariant to scaling either side by a positive factor.
    """
    if len(predicted) != len(target) or not predicted:
        raise ValueError(f"latent_cosine_loss: {len(predicted)} predicted levels vs {len(target)} target levels")
    total = _float(predicted[0]).new_zeros(())
    for p, t in zip(predicted, target, strict=True):
        if p.shape != t.shape:
            raise ValueError(f"latent_cosine_loss: level shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
        p, t = _float(p), _float(t)
        p = F.normalize(p - p.mean(dim=(2, 3), keepdim=True), dim=1, eps=1e-6)
        t = F.normalize(t - t.mean(dim=(2, 3), keepdim=True), dim=1, eps=1e-6)
        total = total + (1.0 - (p * t).sum(dim=1)).mean()
    return total / len(predicted)


def infonce_loss(query: Tensor, key: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between two batches of codes: positives on the diagonal, the batch as negatives.

    Shape:
        - query, key: :math:`(N, D)`; output: scalar. Needs N >= 2.
    """
    if query.shape != key.shape or query.ndim != 2:
        raise ValueError(f"infonce_loss: expected two (N, D) tensors, got {tuple(query.shape)} and {tuple(key.shape)}")
    if query.shape[0] < 2:
        raise ValueError("infonce_loss: needs a batch of at least 2 (the other images are the negatives)")
    query = F.normalize(_float(query), dim=1)
    key = F.normalize(_float(key), dim=1)
    logits = query @ key.t() / temperature
    labels = torch.arange(query.shape[0], device=query.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def latent_warmup(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor of the latent weight: 0 at step 0, 1 from ``warmup_steps`` on."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, max(0.0, step / warmup_steps))


def feature_rms(latents: Latents) -> Tensor:
    """Mean over levels of the root-mean-square feature value (logged to catch exploding norms)."""
    levels = latents.levels()
    return torch.stack([f.detach().float().pow(2).mean().sqrt() for f in levels]).mean()


@dataclass
class LossResult:
    """The scalar to back-propagate and its parts as floats for logging."""

    total: Tensor
    parts: dict[str, float]


def total_loss(terms: dict[str, Tensor], config: LossConfig, step: int) -> LossResult:
    """Combine loss terms by the config's weights.

    Args:
        terms: ``restore`` (required), and ``autoencode``, ``latent``, ``fft``, ``multiscale`` where computed.
        config: the weights.
        step: the optimiser step, for the latent warm-up.
    """
    weights = {
        "restore": 1.0,
        "autoencode": config.autoencode_weight,
        "latent": config.latent_weight * latent_warmup(step, config.latent_warmup_steps),
        "fft": config.fft_weight,
        "multiscale": config.multiscale_weight,
    }
    unknown = set(terms) - set(weights)
    if unknown or "restore" not in terms:
        raise ValueError(f"total_loss: terms must include 'restore' and only {sorted(weights)}, got {sorted(terms)}")
    total = sum((weights[name] * value for name, value in terms.items()), start=terms["restore"].new_zeros(()))
    parts = {f"loss_{name}": float(value.detach()) for name, value in terms.items()}
    parts["latent_weight_now"] = weights["latent"]
    parts["loss_total"] = float(total.detach())
    return LossResult(total=total, parts=parts)


class Predictor(nn.Module):
    """Residual 1×1 MLP head on the blurred branch; starts as the identity (last layer zero)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 4)
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d)
        zero_init(last)

    def forward(self, features: Tensor) -> Tensor:
        output: Tensor = features + self.net(features)
        return output


class BDIRNetObjective(nn.Module):
    """The full training objective of BDIRNet, holding every training-only module.

    Args:
        model: the (unwrapped) network being trained (a :class:`~bdirnet.model.LatentNetwork`): its
            ``latent_channels()`` size the heads, its ``encoder`` seeds the EMA target.
        config: loss weights and form.

    Train through :class:`TrainingModule`, which holds the network and this objective as one module.
    """

    def __init__(self, model: LatentNetwork, config: LossConfig) -> None:
        super().__init__()
        self.config = config
        level_channels = model.latent_channels()
        if config.latent_min_level > len(level_channels) - 1:
            raise ValueError(
                f"train.loss.latent_min_level {config.latent_min_level} > model.levels {len(level_channels) - 1}"
            )
        self.latent_min_level = config.latent_min_level
        self.uses_ema = config.latent_weight > 0 and config.latent_loss == "ema_cosine"
        self.uses_infonce = config.latent_weight > 0 and config.latent_loss == "infonce"
        self.target_encoder: nn.Module | None = None
        if self.uses_ema:
            self.target_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
            # Only the compared levels get a head: DDP needs every parameter to receive a gradient.
            self.predictors = nn.ModuleList([Predictor(c) for c in level_channels[config.latent_min_level :]])
        if self.uses_infonce:
            code = level_channels[-1]
            self.projection = nn.Sequential(nn.Linear(code, code), nn.GELU(), nn.Linear(code, min(code, 128)))
        if config.multiscale_weight > 0:
            if not isinstance(model, MultiScaleNetwork) or not model.coarse_channels():
                raise ValueError(
                    f"train.loss.multiscale_weight > 0 needs a network with coarser decoder levels; "
                    f"{type(model).__name__} (levels {model.config.levels}) has none"
                )
            heads = [nn.Conv2d(c, 3, 3, padding=1) for c in model.coarse_channels()]
            for head in heads:
                zero_init(head)  # start at the pooled blurred image
            self.coarse_heads = nn.ModuleList(heads)

    @property
    def needs_sharp_branch(self) -> bool:
        """Whether the objective uses D(E(s)) / E(s) from the online network."""
        return self.config.autoencode_weight > 0 or self.uses_infonce

    @torch.no_grad()
    def update_target(self, model: LatentNetwork) -> None:
        """EMA step of the target encoder towards the online encoder (call after each optimiser step)."""
        if self.target_encoder is None:
            return
        momentum = self.config.ema_momentum
        for target, online in zip(self.target_encoder.parameters(), model.encoder.parameters(), strict=True):
            target.lerp_(online.detach().to(target.dtype), 1.0 - momentum)
        for target_buffer, online_buffer in zip(self.target_encoder.buffers(), model.encoder.buffers(), strict=True):
            target_buffer.copy_(online_buffer)

    def latent_term(self, outputs: TrainOutputs, sharp: Tensor) -> Tensor | None:
        """The latent comparison loss, or ``None`` when its weight is 0."""
        if self.uses_ema:
            assert self.target_encoder is not None
            with torch.no_grad():
                self.target_encoder.eval()
                target: Latents = self.target_encoder(sharp)
            first = self.latent_min_level
            blurred_levels = outputs.latents_blurred.levels()[first:]
            predicted = [head(f) for head, f in zip(self.predictors, blurred_levels, strict=True)]
            return latent_cosine_loss(predicted, [t.detach() for t in target.levels()[first:]])
        if self.uses_infonce:
            if outputs.latents_sharp is None:
                raise ValueError("infonce latent loss needs the sharp branch: call forward_train(blurred, sharp)")
            query = self.projection(outputs.latents_blurred.bottleneck.float().mean(dim=(2, 3)))
            key = self.projection(outputs.latents_sharp.bottleneck.float().mean(dim=(2, 3)))
            return infonce_loss(query, key, self.config.infonce_temperature)
        return None

    def forward(self, outputs: TrainOutputs, sharp: Tensor, step: int, blurred: Tensor | None = None) -> LossResult:
        """The loss of one batch; ``blurred`` (the network's input) is needed by the multi-scale term only."""
        eps = self.config.charbonnier_eps
        terms = {"restore": charbonnier(outputs.restored_from_blurred, sharp, eps)}
        if self.config.autoencode_weight > 0:
            if outputs.restored_from_sharp is None:
                raise ValueError("autoencode_weight > 0 needs the sharp branch: call forward_train(blurred, sharp)")
            terms["autoencode"] = charbonnier(outputs.restored_from_sharp, sharp, eps)
        latent = self.latent_term(outputs, sharp)
        if latent is not None:
            terms["latent"] = latent
        if self.config.fft_weight > 0:
            terms["fft"] = fft_l1(outputs.restored_from_blurred, sharp)
        if self.config.multiscale_weight > 0:
            if blurred is None:
                raise ValueError("multiscale_weight > 0 needs the blurred batch: pass it to the objective")
            terms["multiscale"] = multiscale_loss(self.coarse_heads, outputs.coarse_features, blurred, sharp, eps)
        result = total_loss(terms, self.config, step)
        result.parts["feature_rms_blurred"] = float(feature_rms(outputs.latents_blurred))
        return result


class TrainingModule(nn.Module):
    """The network and its objective as one module: ``result = module(blurred, sharp, step)``.

    DDP wraps this module, so the network's and the heads' gradients are averaged by DDP alone; the frozen EMA
    target encoder has no gradients and stays out of its way. ``network`` is what inference and the weights
    file use; call :meth:`update_target` after each optimiser step.
    """

    def __init__(self, network: nn.Module, config: LossConfig) -> None:
        super().__init__()
        if not isinstance(network, LatentNetwork):
            raise TypeError(f"TrainingModule: {type(network).__name__} lacks forward_train/latent_channels/encoder")
        self.network = network
        self.objective = BDIRNetObjective(network, config)

    def forward(self, blurred: Tensor, sharp: Tensor, step: int) -> LossResult:
        network: LatentNetwork = self.network  # type: ignore[assignment]
        outputs = network.forward_train(blurred, sharp if self.objective.needs_sharp_branch else None)
        result: LossResult = self.objective(outputs, sharp, step, blurred)
        return result

    def update_target(self) -> None:
        """EMA step of the objective's target encoder towards the network's encoder."""
        self.objective.update_target(self.network)  # type: ignore[arg-type]
