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
from bdirnet.losses import BDIRNetObjective, LossResult
from bdirnet.model import BDIRNet


def build_optimizer(
    model: nn.Module, objective: BDIRNetObjective, config: TrainConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the model and the objective's heads, linear warm-up then cosine decay to 5% of lr."""
    parameters = [p for p in (*model.parameters(), *objective.parameters()) if p.requires_grad]
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
    model: nn.Module,
    objective: BDIRNetObjective,
    optimizer: torch.optim.Optimizer,
    blurred: Tensor,
    sharp: Tensor,
    step: int,
    *,
    bf16: bool = False,
    grad_clip_norm: float = 1.0,
) -> LossResult:
    """Forward both branches, back-propagate the full objective, clip, step, update the EMA target.

    Args:
        model: a :class:`BDIRNet`, possibly wrapped by DDP (``model.module``).
        objective: the training objective, built on the unwrapped model.
        optimizer: over the model's and the objective's parameters.
        blurred, sharp: ``(N, 3, P, P)`` patches on the model's device, P a multiple of ``2**levels``.
        step: the global optimiser step (latent warm-up).
        bf16: bf16 autocast for the forward pass.
        grad_clip_norm: max global gradient norm; 0 disables clipping.
    """
    network = getattr(model, "module", model)  # DDP wraps; a single Ray Train worker does not
    if not isinstance(network, BDIRNet):
        raise TypeError(f"train_step: expected BDIRNet or DDP(BDIRNet), got {type(network).__name__}")
    model.train()
    with autocast_context(blurred.device, bf16):
        if model is network:
            outputs = network.forward_train(blurred, sharp if objective.needs_sharp_branch else None)
        else:  # DDP: go through the wrapper's forward so gradients are synchronised
            outputs = model(blurred, sharp if objective.needs_sharp_branch else None, train=True)
        result = objective(outputs, sharp, step)
    optimizer.zero_grad(set_to_none=True)
    result.total.backward()
    _average_objective_gradients(objective)
    if grad_clip_norm > 0:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        result.parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, grad_clip_norm))
    optimizer.step()
    objective.update_target(network)
    return result


def _average_objective_gradients(objective: BDIRNetObjective) -> None:
    """DDP averages the model's gradients; the objective's heads (predictors, projection) are averaged here."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return
    for parameter in objective.parameters():
        if parameter.grad is not None:
            torch.distributed.all_reduce(parameter.grad)
            parameter.grad /= world_size
