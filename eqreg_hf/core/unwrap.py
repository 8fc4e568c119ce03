"""The user's module inside training wrappers, and the device it lives on: one helper for each.

EQ-Reg's hooks go on the user's module (they still fire when the wrapper calls it), checkpoints
and Hub folders save it, and measurements run it; every one of those finds it here.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["unwrap_model", "model_device"]

# Wrappers recognised by class name, so that this file imports no optional package (FSDP1's
# FullyShardedDataParallel, DeepSpeed's engine, accelerate's and torch's own DDP subclasses).
_WRAPPER_NAMES = ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel", "DeepSpeedEngine")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / FSDP1 / DataParallel / DeepSpeed / ``torch.compile`` wrappers (any nesting).

    FSDP2 (``fully_shard``) and plain modules are returned as they are: they are not wrappers.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> unwrap_model(nn.DataParallel(net)) is net
        True
    """
    for _ in range(8):  # bounded: a wrapper that points at itself cannot loop forever
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if not isinstance(inner, nn.Module):
            is_wrapper = isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) or any(
                cls.__name__ in _WRAPPER_NAMES for cls in type(model).__mro__
            )
            inner = getattr(model, "module", None) if is_wrapper else None
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model that has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
