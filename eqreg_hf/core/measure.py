"""Layer-wise equivariance measurement of any model: a report, a table and a plot.

    err_l = mean over g ≠ e of  ||T_g F_l(x) - F_l(R_g x)|| / ||F_l(R_g x)||      (g in C_t or D_t)

0 for a strictly equivariant layer; about sqrt(2) for unrelated maps of equal norm.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.alignment import AlignmentTracer, check_tap_alignment
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.groups import (
    check_regular_channels,
    is_exact,
    is_identity,
    regular_channels_ok,
    rotate_image,
    rotation_mask,
)
from eqreg_hf.core.io import save_figure
from eqreg_hf.core.layouts import feature_to_nchw, transform_feature
from eqreg_hf.core.selection import resolve_taps
from eqreg_hf.core.taps import FeatureTaps, TapSpec, first_tensor

__all__ = ["equivariance_error", "EquivarianceReport", "measured_config"]


class EquivarianceReport(dict):
    """``{layer: relative equivariance error}`` with a text table, a plot and the run's settings."""

    def __init__(
        self,
        errors: dict[str, float],
        group_order: int,
        input_hw: tuple[int, int],
        ks: list,
        per_k: dict[str, dict] | None = None,
        group: str | None = None,
        misaligned: dict[str, tuple | None] | None = None,
    ):
        super().__init__(errors)
        # {tap: nearest aligned input size or None}: taps whose sampling grid does not line up for this input
        # size (the alignment check of training), so their error cannot reach 0 even for an equivariant layer
        self.misaligned = dict(misaligned or {})
        self.group_order = group_order
        self.group = group or f"C{group_order}"  # "C4", "D4": the group the errors are measured under
        self.input_hw = tuple(input_hw)
        self.ks = list(ks)
        self.per_k = per_k or {}

    @property
    def mean(self) -> float:
        """Mean error over the tapped layers (the ``"output"`` row is not a layer and is left out; NaN if
        none)."""
        vals = [v for k, v in self.items() if k != "output"]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "group_order": self.group_order,
            "input_hw": list(self.input_hw),
            "ks": [list(k) if isinstance(k, tuple) else k for k in self.ks],
            "errors": dict(self),
            "mean": self.mean,
            "misaligned": {n: list(v) if v else None for n, v in self.misaligned.items()},
        }

    def table(self) -> str:
        """A plain-text table, one row per layer, with a bar for the eye."""
        width = max([len(n) for n in self] + [11])
        lines = [
            f"Equivariance error ({self.group}, input {self.input_hw[0]}x{self.input_hw[1]}, "
            f"{_elements_text(self.ks)})",
            f"{'layer':<{width}}  rel. error",
            "-" * (width + 32),
        ]
        for name, err in self.items():
            bar = "#" * min(20, int(round(err * 20 / 1.5)))
            mark = "  (misaligned)" if name in self.misaligned else ""
            lines.append(f"{name:<{width}}  {err:10.4f}  {bar}{mark}")
        lines.append(f"{'mean (taps)':<{width}}  {self.mean:10.4f}")
        if self.misaligned:
            near = {v for v in self.misaligned.values() if v and None not in v}
            fix = (
                f"; input size(s) {', '.join('x'.join(map(str, v)) for v in sorted(near))} would align them"
                if near
                else ""
            )
            lines.append(
                f"warning: misaligned for input {self.input_hw[0]}x{self.input_hw[1]}: "
                f"{', '.join(self.misaligned)} (strides/padding make the sampling grid asymmetric, so their "
                f"error cannot reach 0 even for an equivariant layer){fix}."
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(
        self,
        path: str | os.PathLike,
        title: str | None = None,
        others: dict[str, EquivarianceReport] | None = None,
    ) -> str:
        """Save a PNG of error per layer (``others`` adds one line per named report, same layers)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        series = {"model": self} if not others else dict(others)
        names = list(self.keys())
        fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(names) + 2), 3.6))
        for label, rep in series.items():
            ax.plot(range(len(names)), [rep.get(n, float("nan")) for n in names], marker="o", label=label)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("relative equivariance error")
        ax.set_ylim(bottom=0)
        ax.set_title(title or f"Layer-wise equivariance error ({self.group})")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        return save_figure(fig, path, dpi=120)


@torch.no_grad()
def equivariance_error(
    model: nn.Module,
    x: torch.Tensor,
    config: EqRegConfig | None = None,
    *,
    layers: Any = None,
    group_order: int | None = None,
    group: str | None = None,
    ks: list | None = None,
    include_output: bool = False,
    input_key: str | None = None,
    eval_mode: bool = True,
) -> EquivarianceReport:
    """Per-layer relative equivariance error of ``model`` on the batch ``x``.

    Runs ``model(x)`` and ``model(R_g x)`` for each element ``g`` in ``ks`` (default every element but the
    identity), separately, so non-square inputs and every element work. Interpolated angles compare only
    the inscribed disk.

    Args:
        model: any network; put in eval mode for the measurement (restored afterwards) unless
            ``eval_mode=False``.
        x: ``[B, C, H, W]`` images.
        config: an :class:`EqRegConfig` whose ``layers``, group, ``fields``, ``layouts`` and
            ``prefix_tokens`` say what to measure (its weight and the rest are not used).
        layers, group_order, group: shortcuts that build the config when none is given
            (``EqRegConfig(layers=..., group=...)``; default ``layers="auto"``, C4). Given with a config,
            they must agree with it (a conflict is an error).
        ks: group elements to average over: ints k (rotations) or, for D_t, pairs ``(f, k)`` too.
        include_output: add an ``"output"`` row (the model's output, treated as a trivial field:
            images rotated, vectors left alone — i.e. invariance of logits).
        input_key: call ``model(**{input_key: x})`` (e.g. ``"pixel_values"``) instead of ``model(x)``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        >>> rep = equivariance_error(net, torch.randn(2, 3, 9, 9), layers=["0", "2"])
        >>> sorted(rep), rep.mean > 0.1
        (['0', '2'], True)
        >>> cfg = EqRegConfig(layers=["0"], group="D4", fields={"0": "regular"})
        >>> equivariance_error(net, torch.randn(1, 3, 9, 9), cfg).group
        'D4'
    """
    cfg = measured_config(config, layers=layers, group_order=group_order, group=group)
    grp = cfg.group_spec
    specs = resolve_taps(model, cfg) if grp.size > 1 else []
    ks = _elements(grp, ks)
    was_training = model.training
    if eval_mode:
        model.eval()

    def run(inp):
        return model(**{input_key: inp}) if input_key else model(inp)

    try:
        per_k, misaligned = _per_element(model, run, x, specs, grp, ks, include_output)
    finally:
        model.train(was_training)
    errors = {n: sum(v.values()) / len(v) for n, v in per_k.items() if v}
    near = {n: near for n, _, near in misaligned if n in errors}
    return EquivarianceReport(errors, grp.t, tuple(x.shape[-2:]), ks, per_k, grp.name, near)


def _per_element(
    model: nn.Module, run, x: torch.Tensor, specs: list[TapSpec], grp, ks: list, include_output: bool
):
    """``({tap: {g: error}}, misaligned taps)``: one pass of ``x``, then one of ``R_g x`` per element."""
    per_k: dict[str, dict] = {s.name: {} for s in specs}
    if include_output:
        per_k["output"] = {}
    hw = tuple(x.shape[-2:])
    with FeatureTaps(model, specs, clone=True) as taps, AlignmentTracer(model, hw, grp) as tracer:
        taps.arm()
        out0 = first_tensor(run(x))
        base = taps.take()
        tracer.remove()  # the same alignment check as training, on the first pass
        misaligned = check_tap_alignment(tracer, specs, {n: v[0][1][:1] for n, v in base.items() if v})
        for k in ks:
            xr = rotate_image(x, k, grp)
            taps.arm()
            out_r = first_tensor(run(xr))
            rot = taps.take()
            for spec in [s for s in specs if s.name in per_k]:
                pair = (base[spec.name][0][1], rot[spec.name][0][1])
                err = _tap_error(spec, *pair, k, grp, hw, tuple(xr.shape[-2:]))
                if err is None:
                    per_k.pop(spec.name)
                else:
                    per_k[spec.name][k] = err
            if include_output and out0 is not None:
                per_k["output"][k] = _output_error(out0, out_r, k, grp)
    return per_k, misaligned


def measured_config(
    config: Any, layers: Any = None, group_order: Any = None, group: Any = None
) -> EqRegConfig:
    """The :class:`EqRegConfig` a measurement uses: ``config``, or one built from the shortcuts.

    A shortcut given with a config must agree with it (the same layers, the same group).
    """
    given = {
        k: v for k, v in (("layers", layers), ("group_order", group_order), ("group", group)) if v is not None
    }
    if config is None:
        return EqRegConfig(**{"layers": "auto", **given})
    if not isinstance(config, EqRegConfig):
        raise TypeError(
            f"config={config!r} is not an EqRegConfig: pass EqRegConfig(layers=..., group=...) or use the "
            "keywords, e.g. equivariance_error(model, x, layers=['0', '2'], group='C4')."
        )
    if not given:
        return config
    own = EqRegConfig(**{"layers": config.layers, **given})  # checks group against group_order
    conflicts = [f"layers={own.layers!r} (config: {config.layers!r})"] if own.layers != config.layers else []
    if ("group" in given or "group_order" in given) and own.group_spec != config.group_spec:
        conflicts.append(f"group {own.group_spec.name} (config: {config.group_spec.name})")
    if conflicts:
        raise ValueError(
            f"equivariance_error: {' and '.join(conflicts)} disagree with the config: give each setting "
            "once, in the config or as a keyword."
        )
    return config


def _elements(grp, ks: list | None) -> list:
    """The non-identity elements to measure, written the group's way: ints k mod t for C_t,
    ``GroupElement``s for D_t."""
    elements = [grp.element(k) for k in (ks if ks is not None else grp.elements())]
    return [g for g in elements if not is_identity(g)]


def _tap_error(
    spec: TapSpec,
    f: torch.Tensor,
    f_rot: torch.Tensor,
    k: int,
    group_order: int,
    hw: tuple[int, int],
    rot_hw: tuple[int, int],
) -> float | None:
    """Relative error of one tap for one k; None for an auto-chosen tap that cannot hold regular fields."""
    a, layout = feature_to_nchw(f, spec, hw)
    b, _ = feature_to_nchw(f_rot, spec, rot_hw)
    if spec.field == "regular" and not regular_channels_ok(a.shape[1], group_order):
        if spec.explicit:
            check_regular_channels(spec.name, a.shape[1], group_order)
        return None
    ta = transform_feature(a.float(), k, group_order, spec.field, layout, "bilinear")
    return _rel(ta, b.float(), not is_exact(k, group_order) and layout != "vector")


def _output_error(out: torch.Tensor, out_rot: torch.Tensor, k: int, group_order: int) -> float:
    """The model output as a trivial field: images rotated, vectors (logits) left alone (invariance)."""
    o = out.float()
    ta = rotate_image(o, k, group_order) if o.dim() >= 3 else o
    return _rel(ta, out_rot.float(), not is_exact(k, group_order) and o.dim() >= 3)


def _rel(a: torch.Tensor, b: torch.Tensor, masked: bool) -> float:
    if a.shape != b.shape:
        raise RuntimeError(
            f"Rotated map has shape {tuple(b.shape)}, expected {tuple(a.shape)}: the layer does not "
            "rotate with the input (misaligned strides, or a wrong layout)."
        )
    if masked:
        mask = rotation_mask(a.shape[-2], a.shape[-1], device=a.device)
        a, b = a * mask, b * mask
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-12))


def _elements_text(ks: list) -> str:
    """``k in [1, 2, 3]`` for rotations; ``g in [r1, r2, r3, s, s·r1, ...]`` when flips are among them."""
    if all(not getattr(g, "flip", 0) for g in ks):
        return f"k in {[getattr(g, 'k', g) for g in ks]}"
    names = [
        ("s" if g.flip else "") + ("·" if g.flip and g.k else "") + (f"r{g.k}" if g.k else "") for g in ks
    ]
    return "g in [" + ", ".join(names) + "] (r: one rotation step, s: the flip)"
