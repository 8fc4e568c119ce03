"""Which layers to tap: names, glob patterns, or ``"auto"`` (a policy per model family, by duck typing).

:func:`resolve_taps` turns ``EqRegConfig.layers`` into :class:`~eqreg_hf.core.taps.TapSpec` objects.
For ``"auto"`` it asks :func:`auto_taps`, which recognises the model families below by their class's
module name and attributes (this file imports neither timm nor transformers).
It knows the families below and returns ``None`` for anything else, so the core falls back to every
``nn.Conv2d`` whose output channels divide by t.

=================================  ================================  =======  ==============
family                             taps                              layout   prefix tokens
=================================  ================================  =======  ==============
timm CNNs (ResNet, ConvNeXt, ...)  ``model.feature_info`` modules    NCHW     -
timm Swin / SwinV2 / MambaOut      ``feature_info`` (``output_fmt``) NHWC     -
timm ViT / DeiT / EVA / BEiT ...   up to 4 evenly spaced ``blocks``  tokens   ``num_prefix_tokens``
transformers ViT / DeiT / DINOv2   ``<base>.layers.N`` (or           tokens   1 (DeiT 2, +registers)
                                   ``encoder.layer.N``), up to 4
transformers ConvNeXt / ResNet /   ``<base>.encoder.stages.N``       NCHW     -
RegNet / BiT / ConvNeXtV2
transformers Swin / SwinV2         ``<base>.encoder.layers.N``       tokens   0
transformers Swin2SR (restoration) ``swin2sr.encoder.stages.N:0``    tokens   0 (the input grid)
=================================  ================================  =======  ==============

Swin2SR (patch size 1) keeps its tokens on the input grid when the input's sides are multiples of
``window_size``; otherwise it pads bottom/right and :func:`~eqreg_hf.core.alignment.window_problem` warns
(transformers 5.x then fails on the size anyway).

Stages are the natural place for EQ-Reg in a classifier: they are the features a downstream head
sees, there are few of them (cheap), and each has a channel count that is usually divisible by 2 and 4.
Taps whose channel count does not divide by ``group_order`` are skipped with a warning (the core
refuses them only when they are named explicitly).
"""

from __future__ import annotations

import difflib
import logging
import math
import warnings

from torch import nn

from eqreg_hf.core.groups import regular_channels_ok
from eqreg_hf.core.taps import OUTPUT_SEP, TapSpec, match_layer, parse_selector, per_layer

__all__ = ["resolve_taps", "auto_taps", "find_backbone", "MAX_TOKEN_TAPS"]

logger = logging.getLogger(__name__)

# Token models have one feature_info entry per block (12-40): tapping every block costs memory and
# over-weights the deep end; 4 evenly spaced blocks (as forward_intermediates(indices=4)) suffice.
MAX_TOKEN_TAPS = 4

# timm classes whose block outputs are not spatially ordered (Hiera keeps tokens in "mask unit"
# order and only re-rolls them in forward_intermediates), so rotating them would compare nonsense.
_TIMM_UNORDERED = {"Hiera"}

# transformers model_type -> (layout, prefix tokens or None = read from the config)
_HF_FAMILIES: dict[str, tuple[str, int | None]] = {
    "vit": ("tokens", 1),
    "vit_msn": ("tokens", 1),
    "deit": ("tokens", 2),  # class + distillation token
    "beit": ("tokens", 1),
    "data2vec-vision": ("tokens", 1),
    "dinov2": ("tokens", 1),
    "dinov2_with_registers": ("tokens", None),
    "convnext": ("nchw", 0),
    "convnextv2": ("nchw", 0),
    "resnet": ("nchw", 0),
    "regnet": ("nchw", 0),
    "bit": ("nchw", 0),
    "swin": ("tokens", 0),
    "swinv2": ("tokens", 0),
    "donut-swin": ("tokens", 0),
    # Swin2SR stages (residual Swin blocks) keep embed_dim channels and the full resolution: every one
    # is tapped.
    "swin2sr": ("tokens", 0),
}
_HF_TUPLE_STAGES = ("swin", "swinv2", "donut-swin", "swin2sr")
# Where the blocks live under the base model, most specific first (ConvNeXtV2 has stages.N.layers).
_HF_CONTAINERS = ("encoder.stages", "stages", "encoder.layers", "layers", "encoder.layer", "layer")


def _is_timm(module: nn.Module) -> bool:
    return type(module).__module__.startswith("timm.") and isinstance(
        getattr(module, "feature_info", None), list
    )


def _is_transformers(module: nn.Module) -> bool:
    return (
        type(module).__module__.startswith("transformers.")
        and hasattr(module, "config")
        and hasattr(module, "base_model_prefix")
    )


def find_backbone(model: nn.Module) -> tuple[str, nn.Module, str] | None:
    """The first timm or transformers model inside ``model`` (itself included).

    Returns ``(name prefix, module, "timm" | "transformers")`` or None, so a user's wrapper such as
    ``nn.Sequential(timm_model, head)`` or ``self.backbone = timm.create_model(...)`` still gets its taps.
    """
    for name, module in model.named_modules():
        if _is_timm(module):
            return name, module, "timm"
        if _is_transformers(module):
            return name, module, "transformers"
    return None


def _evenly_spaced(n: int, k: int) -> list[int]:
    """Indices of the last block of each of ``k`` equal chunks of ``range(n)`` (all when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({math.ceil((i + 1) * n / k) - 1 for i in range(k)})


def _keep_divisible(specs: list[tuple[TapSpec, int | None]], group_order: int, family: str) -> list[TapSpec]:
    kept, skipped = [], []
    for spec, channels in specs:
        if (
            channels is not None
            and spec.field == "regular"
            and not regular_channels_ok(channels, group_order)
        ):
            skipped.append(f"{spec.name} ({channels} channels)")
        else:
            kept.append(spec)
    if skipped:
        warnings.warn(
            f"EQ-Reg auto taps for {family}: skipped {', '.join(skipped)}: channels not divisible by "
            f"{group_order} (the channels of one regular field). Name layers explicitly or mark them trivial "
            "to use them.",
            UserWarning,
            stacklevel=4,
        )
    return kept


def _timm_taps(prefix: str, model: nn.Module, group_order: int) -> list[TapSpec] | None:
    cls = type(model).__name__
    if cls in _TIMM_UNORDERED:
        warnings.warn(
            f"EQ-Reg: timm {cls} keeps its block outputs in a non-spatial token order, so no stage can be "
            "tapped automatically; falling back to Conv2d layers. Name layers explicitly to choose others.",
            UserWarning,
            stacklevel=3,
        )
        return None
    info = [d for d in model.feature_info if d.get("module")]
    if not info:
        return None
    npt = getattr(model, "num_prefix_tokens", None)
    if getattr(model, "output_fmt", None) == "NHWC":
        layout, prefix_tokens = "nhwc", None
    elif npt is not None:
        # ViT-style: feature_info lists every block (same stride); keep a few evenly spaced ones.
        layout, prefix_tokens = "tokens", int(npt)
        info = [info[i] for i in _evenly_spaced(len(info), MAX_TOKEN_TAPS)]
    else:
        layout, prefix_tokens = "auto", None  # 4-D -> NCHW; 3-D (LeViT-like tokens) -> prefix inferred
    specs = [
        (
            TapSpec(_join(prefix, d["module"]), field="regular", layout=layout, prefix_tokens=prefix_tokens),
            d.get("num_chs"),
        )
        for d in info
    ]
    return _keep_divisible(specs, group_order, f"timm {cls}")


def _hf_channels(config, model_type: str, i: int, n: int) -> int | None:
    if model_type in ("convnext", "convnextv2", "resnet", "regnet", "bit"):
        sizes = getattr(config, "hidden_sizes", None)
        return int(sizes[i]) if sizes and i < len(sizes) else None
    if model_type in ("swin", "swinv2", "donut-swin"):
        # A stage ends with patch merging (channels x2) except the last one.
        return int(config.embed_dim) * 2 ** min(i + 1, n - 1)
    size = getattr(config, "hidden_size", None)
    return int(size) if size is not None else None


def _transformers_taps(prefix: str, model: nn.Module, group_order: int) -> list[TapSpec] | None:
    config = model.config
    model_type = getattr(config, "model_type", "")
    family = _HF_FAMILIES.get(model_type)
    if family is None:
        return None
    layout, prefix_tokens = family
    if prefix_tokens is None:  # registers: class token + config.num_register_tokens
        prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0))
    base_prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, base_prefix, None) if base_prefix else None
    base_name = _join(prefix, base_prefix) if isinstance(base, nn.Module) else prefix
    base = base if isinstance(base, nn.Module) else model
    container_name = None
    for path in _HF_CONTAINERS:
        container = base.get_submodule(path) if _has_submodule(base, path) else None
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container) > 0:
            container_name = path
            break
    if container_name is None:
        return None
    n = len(base.get_submodule(container_name))
    indices = _evenly_spaced(n, MAX_TOKEN_TAPS) if layout == "tokens" and prefix_tokens else list(range(n))
    # Swin stages return (hidden states, states before downsampling, sizes), Swin2SR's (tokens, sizes): the
    # first is the stage's output.
    output = (0,) if model_type in _HF_TUPLE_STAGES else ()
    specs = [
        (
            TapSpec(
                _join(base_name, f"{container_name}.{i}"),
                field="regular",
                layout=layout,
                prefix_tokens=prefix_tokens if layout == "tokens" else None,
                output=output,
            ),
            _hf_channels(config, model_type, i, n),
        )
        for i in indices
    ]
    return _keep_divisible(specs, group_order, f"transformers {type(model).__name__}")


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def auto_taps(model: nn.Module, group_order: int) -> list[TapSpec] | None:
    """Taps for ``layers="auto"``: the stages of a timm or transformers vision model, or None.

    A model with an ``eqreg_layers(group_order) -> list[str]`` method chooses its own taps (the
    library's derainers do); otherwise the first timm / transformers model inside ``model`` is used.

    Args:
        model: a timm model, a transformers vision model, a module that contains one (its names
            are then prefixed, e.g. ``backbone.layer1``), or a model with ``eqreg_layers``.
        group_order: the channels of one regular field (t for C_t, 2t for D_t; ``eqreg_layers`` gets the
            same number); stages whose channels do not divide by it are skipped with a warning.

    Returns:
        A list of :class:`~eqreg_hf.core.taps.TapSpec` (``field="regular"``, the layout and prefix
        tokens of each family), or None for other models (the core then taps every ``nn.Conv2d``
        whose output channels divide by t).

    Example:
        >>> import timm
        >>> [t.name for t in auto_taps(timm.create_model("resnet18"), 4)]
        ['act1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    own = getattr(model, "eqreg_layers", None)
    if callable(own):
        # A model that names its own taps (the library's derainers, or any user model with this method).
        return [TapSpec(name, field="regular") for name in own(group_order)] or None
    found = find_backbone(model)
    if found is None:
        return None
    prefix, backbone, kind = found
    taps = (
        _timm_taps(prefix, backbone, group_order)
        if kind == "timm"
        else _transformers_taps(prefix, backbone, group_order)
    )
    if taps:
        logger.debug("EQ-Reg auto taps for %s: %s", type(backbone).__name__, [t.name for t in taps])
    return taps or None


def _plain_conv_taps(model: nn.Module, group_order: int) -> list[str]:
    """Every ``nn.Conv2d`` whose output channels hold regular fields, except convs that output image
    channels (as many as the first conv reads: an image-to-image net's output conv is an image, not a
    regular field)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    image_channels = convs[0][1].in_channels if convs else None
    return [
        n
        for n, m in convs
        if m.out_channels != image_channels and regular_channels_ok(m.out_channels, group_order)
    ]


def _auto_specs(model: nn.Module, config) -> list[TapSpec]:
    group = config.group_spec
    field_size = group.size  # channels of one regular field
    auto = auto_taps(model, field_size)
    if auto:
        for spec in auto:
            spec.explicit = False
        return list(auto)
    names = _plain_conv_taps(model, field_size)
    if not names:
        rule = group.field_rule()
        raise ValueError(
            f"layers='auto' found no layer to tap in {type(model).__name__}: no hidden nn.Conv2d has output "
            f"channels divisible by {rule} (convs that output the image's channels are outputs, not regular "
            "fields). Choose another group order, or name the layers explicitly (EqRegConfig(layers=[...])) "
            "and mark non-divisible ones trivial."
        )
    return [TapSpec(n, explicit=False) for n in names]


def _split_selector(pattern: str, modules: dict) -> tuple[str, tuple]:
    """``"block:0"`` -> ``("block", (0,))``; a module whose own name holds the separator keeps it whole."""
    if not isinstance(pattern, str):
        raise ValueError(
            f"Layer {pattern!r} is a {type(pattern).__name__}: give module names or glob patterns "
            "as strings, e.g. layers=['body.0', 'stages.*']."
        )
    if OUTPUT_SEP not in pattern or pattern in modules:
        return pattern, ()
    name, _, selector = pattern.partition(OUTPUT_SEP)
    return name, parse_selector(selector)


def _named_specs(model: nn.Module, layers) -> list[TapSpec]:
    modules = dict(model.named_modules())
    specs: dict[str, TapSpec] = {}
    for item in [layers] if isinstance(layers, str) else list(layers):
        pattern, selector = _split_selector(item, modules)
        if any(ch in pattern for ch in "*?["):
            matched = [n for n in modules if n and match_layer(n, pattern)]
            if not matched:
                raise ValueError(
                    f"Layer pattern {pattern!r} matches no module of {type(model).__name__} ('*' matches one "
                    f"level of the dotted name, '**' any depth). Some module names: {_some_names(modules)}."
                )
        else:
            if pattern not in modules or pattern == "":
                close = difflib.get_close_matches(pattern, list(modules), n=5)
                raise ValueError(
                    f"No module named {pattern!r} in {type(model).__name__}. "
                    + (f"Did you mean one of {close}? " if close else "")
                    + "List them with [n for n, _ in model.named_modules()], or use a glob such as 'body.*'."
                )
            matched = [pattern]
        for n in matched:
            if n in specs and specs[n].output != selector:
                raise ValueError(
                    f"Layer {n!r} is tapped twice with different output selectors "
                    f"({specs[n].label!r} and {TapSpec(n, output=selector).label!r}); tap it once."
                )
            specs.setdefault(n, TapSpec(n, output=selector))
    return list(specs.values())


def _check_setting_keys(specs: list[TapSpec], config) -> None:
    """A ``{layer or glob: value}`` setting whose key matches no tap would be ignored: refuse it."""
    names = [s.name for s in specs]
    for setting in ("fields", "layouts", "layer_weights", "prefix_tokens"):
        value = getattr(config, setting)
        if not isinstance(value, dict):
            continue
        for key in value:
            if not any(match_layer(n, key) for n in names):
                shown = names[:8] + (["..."] if len(names) > 8 else [])
                raise ValueError(
                    f"{setting}={{{key!r}: ...}} matches none of the {len(names)} tapped layer(s) {shown}, "
                    "so it would be ignored. Use a tapped layer's name or a glob that matches one ('*' = one "
                    "level, '**' = any depth), or add the layer to layers=."
                )


def resolve_taps(model: nn.Module, config) -> list[TapSpec]:
    """Turn ``config.layers`` (names, globs or ``"auto"``) into a list of :class:`TapSpec`.

    Exact names must exist; a glob must match at least one module (``*`` one level of the dotted name, ``**``
    any depth, see :func:`~eqreg_hf.core.taps.match_layer`); ``"<layer>:<index or key>"`` picks one element of
    a layer that returns a tuple / dict / dataclass. ``"auto"`` asks :func:`auto_taps` for a model-specific
    choice (timm, transformers) and falls back to every hidden ``nn.Conv2d`` whose output channels divide
    by t. The keys of ``fields`` / ``layouts`` / ``layer_weights`` / ``prefix_tokens`` dicts must each
    match a tap.
    """
    specs = _auto_specs(model, config) if config.layers == "auto" else _named_specs(model, config.layers)
    _check_setting_keys(specs, config)
    for spec in specs:
        # A dict or a non-default string from the user wins; otherwise an adapter's choice stands.
        if isinstance(config.fields, dict):
            spec.field = per_layer(config.fields, spec.name, spec.field)
        elif spec.explicit or config.fields != "regular":
            spec.field = config.fields
        if isinstance(config.layouts, dict):
            spec.layout = per_layer(config.layouts, spec.name, spec.layout)
        elif spec.explicit or config.layouts != "auto":
            spec.layout = config.layouts
        if config.prefix_tokens is not None:
            spec.prefix_tokens = per_layer(config.prefix_tokens, spec.name, spec.prefix_tokens)
        spec.weight = float(per_layer(config.layer_weights, spec.name, 1.0))
    return specs


def _some_names(modules: dict, n: int = 12) -> list[str]:
    names = [k for k in modules if k]
    return names[:n] + (["..."] if len(names) > n else [])
