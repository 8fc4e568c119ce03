"""Type and range checks of every :class:`~eqreg_hf.core.config.EqRegConfig` field, one line per refusal.

A config comes from Python, from JSON (``eqreg_config.json``), from YAML or from the command line, so a
value can arrive as the wrong type (``"0.5"`` quoted by a YAML file, ``True`` where a number belongs) or out
of range (a negative or NaN layer weight). Each check refuses it in one line that names the field, the
value, what is valid and the fix; nothing is coerced silently. The names inside ``fields`` / ``layouts`` /
``layer_weights`` / ``prefix_tokens`` dicts are checked against the model's taps when the taps are resolved
(:func:`eqreg_hf.core.selection.resolve_taps`), since only then are the layer names known.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["check_fields", "is_finite_number"]


def _kind(value: Any) -> str:
    name = "bool" if isinstance(value, bool) else type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _string_hint(value: Any) -> str:
    """For a number written as a string (YAML / JSON quoting, a CLI value passed on as text): say so."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return f" ({value!r} is a string: write the number itself, {value}, not quoted)"
    return ""


def is_finite_number(value: Any) -> bool:
    """A real int or float (not a bool, not a quoted string), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{name}={value!r} is {_kind(value)}: give True or False (in JSON/YAML: true / false, unquoted)."
        )


def _check_int(name: str, value: Any, low: int, what: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(
            f"{name}={value!r} is not valid{_string_hint(value)}: give an integer >= {low} ({what})."
        )


def _check_name(name: str, value: Any, what: str) -> None:
    if not (isinstance(value, str) and value.strip()):
        raise ValueError(f"{name}={value!r} is not valid: give a non-empty string ({what}).")


def _check_weight(name: str, value: Any) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise ValueError(
            f"{name}={value!r} is not valid{_string_hint(value)}: a layer weight must be a finite number "
            ">= 0 (0 leaves the layer out of the loss; negative or NaN weights would make it meaningless)."
        )


def _check_per_layer(name: str, value: Any, check_one) -> None:
    """One value for every tap, or a non-empty ``{layer name or glob: value}`` dict of them."""
    if isinstance(value, dict):
        if not value:
            raise ValueError(
                f"{name}={{}} is an empty dict: leave it out, or map layer names or globs to values."
            )
        for key, v in value.items():
            if not (isinstance(key, str) and key.strip()):
                raise ValueError(
                    f"{name} has the key {key!r}: keys are layer names or glob patterns (strings)."
                )
            check_one(f"{name}[{key!r}]", v)
    else:
        check_one(name, value)


def _check_layers(value: Any) -> None:
    fix = "give 'auto', a module name, a glob pattern (e.g. 'body.*.conv1') or a non-empty list of them"
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"layers={value!r} is empty: {fix}.")
        return
    if not isinstance(value, list) or not value:
        raise ValueError(f"layers={value!r} is not valid ({_kind(value)}): {fix}.")
    bad = [v for v in value if not (isinstance(v, str) and v.strip())]
    if bad:
        raise ValueError(
            f"layers={value!r} holds {bad[0]!r}, {_kind(bad[0])}: every entry must be a module name or a "
            "glob pattern (a non-empty string)."
        )
    if "auto" in value:
        raise ValueError(
            f"layers={value!r}: 'auto' stands alone (layers='auto'); it cannot be mixed with names."
        )


def _check_prefix(name: str, value: Any) -> None:
    if value is not None:
        _check_int(name, value, 0, "class/register tokens before the patch tokens; None infers it")


def check_fields(cfg: Any) -> None:
    """Refuse a field of ``cfg`` of the wrong type or out of range (``weight``, ``group``, ``group_order``,
    ``target_share``, ``auto_warmup`` and the choice fields are checked by ``EqRegConfig.validate``
    itself)."""
    _check_layers(cfg.layers)
    if cfg.layer_weights is not None:
        _check_per_layer("layer_weights", cfg.layer_weights, _check_weight)
    if cfg.prefix_tokens is not None:
        _check_per_layer("prefix_tokens", cfg.prefix_tokens, _check_prefix)
    for name in ("fields", "layouts"):
        if isinstance(getattr(cfg, name), dict) and not getattr(cfg, name):
            raise ValueError(
                f"{name}={{}} is an empty dict: leave it out, or map layer names or globs to values."
            )
    if not (is_finite_number(cfg.rotated_fraction) and 0 < cfg.rotated_fraction <= 1):
        raise ValueError(
            f"rotated_fraction={cfg.rotated_fraction!r} is not valid{_string_hint(cfg.rotated_fraction)}: "
            "give a number in (0, 1], the share of the batch that gets a rotated copy (1.0 = the whole "
            "batch, as in the paper)."
        )
    if not (isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and 0 <= cfg.seed < 2**63):
        raise ValueError(
            f"seed={cfg.seed!r} is not valid{_string_hint(cfg.seed)}: give an integer in [0, 2**63) "
            "(the seed of the k sampler)."
        )
    if not (is_finite_number(cfg.eps) and cfg.eps > 0):
        raise ValueError(
            f"eps={cfg.eps!r} is not valid{_string_hint(cfg.eps)}: give a finite number > 0 (the "
            "stabiliser of the 'relative' distance, e.g. 1e-8)."
        )
    _check_bool("include_identity", cfg.include_identity)
    _check_bool("rotate_targets", cfg.rotate_targets)
    _check_name("image_key", cfg.image_key, "the key of the image in dict batches, e.g. 'pixel_values'")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("distance", "interpolation", "capture") and not isinstance(value, str):
            raise ValueError(
                f"{f.name}={value!r} is {_kind(value)}: give the name as a string, e.g. "
                f"{f.name}={f.default!r}."
            )
