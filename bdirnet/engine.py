"""One optimisation step of BDIRNet and the optimiser it uses, in plain PyTorch (no Ray, no MLflow).

Ray Train's worker loop, the tests and the benchmarks all call :func:`train_step`, so the objective is
identical everywhere.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn

from bdirnet.config import TrainConfig
from bdirnet.losses import LossResult, TrainingModule


class NonFiniteLoss(ArithmeticError):
    """The loss or the (all-reduced) gradient norm of a step is NaN or infinite; the step was not applied."""

    def __init__(self, step: int, parts: dict[str, float]) -> None:
        shown = ", ".join(f"{key} {value:.4g}" for key, value in sorted(parts.items()))
        super().__init__(f"the loss is not finite at step {step} ({shown})")
        self.step = step
        self.parts = parts


def build_optimizer(
    module: nn.Module, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters of ``module`` (a :class:`TrainingModule`: the network and the
    objective's heads), linear warm-up then cosine decay to 5% of lr."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    warmup = max(1, min(100, total_steps // 20))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on the given device when enabled (AMX CPUs and modern GPUs), else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    blurred: Tensor,
    sharp: Tensor,
    step: int,
    *,
    bf16: bool = False,
    grad_clip_norm: float = 1.0,
) -> LossResult:
    """Forward the objective, back-propagate it, clip, step, update the EMA target.

    Args:
        module: a :class:`TrainingModule`, possibly wrapped by DDP (``module.module``).
        optimizer: over the module's parameters (:func:`build_optimizer`).
        blurred, sharp: ``(N, 3, P, P)`` patches on the module's device, P a multiple of ``2**levels``.
        step: the global optimiser step (latent warm-up).
        bf16: bf16 autocast for the forward pass.
        grad_clip_norm: max global gradient norm; 0 disables clipping.

    Raises:
        NonFiniteLoss: the loss or the gradient norm is NaN/inf. The optimiser step is skipped, so the parameters
            stay as they were. Under DDP the gradients are all-reduced before the check, so every rank raises at
            the same step even when only one rank's loss diverged.
    """
    training = getattr(module, "module", module)  # DDP wraps; a single Ray Train worker does not
    if not isinstance(training, TrainingModule):
        raise TypeError(f"train_step: expected TrainingModule or DDP(TrainingModule), got {type(training).__name__}")
    module.train()
    with autocast_context(blurred.device, bf16):
        result: LossResult = module(blurred, sharp, step)
    optimizer.zero_grad(set_to_none=True)
    result.total.backward()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    # With clipping off the norm is still measured (max_norm inf clips nothing): it is the divergence check.
    grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm if grad_clip_norm > 0 else math.inf))
    result.parts["grad_norm"] = grad_norm
    if not (math.isfinite(grad_norm) and math.isfinite(result.parts.get("loss_total", 0.0))):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLoss(step, result.parts)
    optimizer.step()
    training.update_target()
    return result
