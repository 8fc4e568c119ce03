"""The input size at which every tap of a model has a symmetric sampling grid (exact 90° turns)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.unwrap import model_device

__all__ = ["aligned_input_size"]


@torch.no_grad()
def aligned_input_size(model: nn.Module, size: int, config: EqRegConfig, radius: int = 8) -> int | None:
    """The input size nearest to ``size`` at which every tap of ``config`` has a symmetric sampling grid.

    At such a size a 90° rotation of each tapped map lines up exactly with the map of the rotated input
    (see the alignment notes in docs/design.md), so EQ-Reg can reach 0. Ties go to the larger size. Returns
    None when no size within ``radius`` is aligned or the model only accepts its own size (ViT).

    Example:
        >>> import timm
        >>> aligned_input_size(timm.create_model("resnet18"), 32, EqRegConfig())
        33
    """
    from eqreg_hf.core.alignment import AlignmentTracer
    from eqreg_hf.core.layouts import feature_to_nchw
    from eqreg_hf.core.selection import resolve_taps
    from eqreg_hf.core.taps import FeatureTaps

    # any non-trivial group: the taps are what matters here (C2 when the config's group is trivial)
    cfg = (
        dataclasses.replace(config, weight=1.0)
        if config.group_spec.size > 1
        else dataclasses.replace(config, weight=1.0, group=None, group_order=2)
    )
    specs = resolve_taps(model, cfg)
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, specs, clone=False) as taps:
            for cand in sorted(
                range(max(8, size - radius), size + radius + 1), key=lambda c: (abs(c - size), -c)
            ):
                tracer = AlignmentTracer(model, (cand, cand))
                taps.arm()
                try:
                    model(torch.zeros(1, 3, cand, cand, device=model_device(model)))
                except Exception:  # e.g. a ViT built for one size: keep the size asked for
                    tracer.remove()
                    taps.disarm()
                    return None
                feats = taps.take()
                tracer.remove()
                ok = True
                for spec in specs:
                    if not feats.get(spec.name):
                        continue
                    f, layout = feature_to_nchw(feats[spec.name][0][1][:1], spec, (cand, cand))
                    if layout == "vector":
                        continue
                    res = tracer.check(tuple(f.shape[-2:]))
                    if res is not None and not res[0]:
                        ok = False
                        break
                if ok:
                    return cand
    finally:
        model.train(was_training)
    return None
