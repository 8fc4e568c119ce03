"""Rotation consistency as a product metric, and test-time self-ensembling as its costly alternative.

A user who turns a photo expects the restored photo turned, not a different restoration. Three numbers say
how far a model is from that, and what it costs to get there without training for it:

* ``psnr_turned``: held-out PSNR on test images turned by every non-identity element of the group (a
  model that only learned upright images drops here);
* ``output_consistency``: ``‖R_g⁻¹ f(R_g y) − f(y)‖ / ‖f(y)‖`` averaged over the group (0: exactly
  equivariant output);
* ``psnr_ensemble``: the self-ensemble ``mean_g R_g⁻¹ f(R_g y)`` (exactly consistent, ``|G|`` passes per
  image: 4 for C4, 8 for D4).

    >>> net = torch.nn.Conv2d(3, 3, 3, padding=1)
    >>> y = torch.rand(1, 3, 8, 8)
    >>> ens = self_ensemble(net, y, "C4")                      # consistent by construction
    >>> torch.allclose(self_ensemble(net, torch.rot90(y, 1, (-2, -1)), "C4"), torch.rot90(ens, 1, (-2, -1)),
    ...                atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from eqreg_hf.core.group_families import as_group
from eqreg_hf.core.groups import is_identity, rotate_image
from eqreg_hf.tasks.metrics import restoration_metrics

__all__ = ["inverse", "self_ensemble", "consistency_report"]

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _exact(group: str) -> object:
    spec = as_group(group)
    if spec.t not in (1, 2, 4):
        raise ValueError(
            f"group={group!r}: self-ensembling and turned test images use exact 90° turns only; "
            "choose C2, C4, D2 or D4."
        )
    return spec


def inverse(g: object, group: str) -> object:
    """``g⁻¹``: ``-k mod t`` for a rotation; a mirror image ``(1, k)`` is its own inverse."""
    spec = as_group(group)
    if not isinstance(g, tuple):
        return spec.element((-int(g)) % spec.t)
    f, k = g
    return spec.element((1, k) if f else (0, (-k) % spec.t))


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float()


@torch.no_grad()
def self_ensemble(model: nn.Module, x: torch.Tensor, group: str = "C4", forward: Forward | None = None):
    """``mean_g R_g⁻¹ f(R_g x)`` over every element of ``group`` (``|G|`` forward passes)."""
    spec, forward = _exact(group), forward or _default_forward
    outs = [
        rotate_image(forward(model, rotate_image(x, g, spec)), inverse(g, spec.name), spec)
        for g in spec.elements(include_identity=True)
    ]
    return torch.stack(outs).mean(0)


@torch.no_grad()
def consistency_report(
    model: nn.Module,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    group: str = "C4",
    forward: Forward | None = None,
) -> dict[str, float]:
    """PSNR (RGB) upright, on turned test images and of the self-ensemble, and the output's consistency
    error, averaged over ``pairs`` of ``(degraded [C, h, w], clean [C, H, W])``; ``ensemble_passes`` = |G|."""
    spec, forward = _exact(group), forward or _default_forward
    if not pairs:
        raise ValueError("consistency_report got no (degraded, clean) pairs: give at least one.")
    was_training = model.training
    model.eval()
    sums = {"psnr": 0.0, "psnr_turned": 0.0, "psnr_ensemble": 0.0, "output_consistency": 0.0}
    turns = [g for g in spec.elements(include_identity=True) if not is_identity(g)]
    try:
        for degraded, clean in pairs:
            y, x = degraded.unsqueeze(0), clean.unsqueeze(0)
            out = forward(model, y)
            sums["psnr"] += restoration_metrics(out, x, on="rgb")["psnr"]
            turned, gap = 0.0, 0.0
            for g in turns:
                out_g = forward(model, rotate_image(y, g, spec))
                turned += restoration_metrics(out_g, rotate_image(x, g, spec), on="rgb")["psnr"]
                back = rotate_image(out_g, inverse(g, spec.name), spec)
                gap += float((back - out).norm() / out.norm().clamp_min(1e-12))
            sums["psnr_turned"] += turned / len(turns)
            sums["output_consistency"] += gap / len(turns)
            ensemble = self_ensemble(model, y, spec.name, forward)
            sums["psnr_ensemble"] += restoration_metrics(ensemble, x, on="rgb")["psnr"]
    finally:
        model.train(was_training)
    report = {k: v / len(pairs) for k, v in sums.items()}
    report["ensemble_passes"] = float(spec.size)
    return report
