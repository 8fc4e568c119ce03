"""What the web demo computes, without any UI: load a model, degrade, restore, compare, measure.

Every function takes and returns plain arrays / dicts, so the Gradio app (:mod:`eqreg_hf.app.ui`) only
wires widgets to them and the tests can call them directly.

    model = load_app_model("eqreg-demo/model")          # a saved Hub folder (or a Hub id)
    out = restore_image(model, photo, "rain streaks")   # input / restored / clean, PSNR of each
    view = rotation_consistency(model, photo, k=1)      # f(x) vs R_k^-1 f(R_k x): difference map and its size
    bars = layer_errors(model, photo)                   # the model's per-layer equivariance error
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "AppModel",
    "DEGRADATIONS",
    "DEMO_FOLDER",
    "load_app_model",
    "default_model_source",
    "degrade",
    "restore_image",
    "rotation_consistency",
    "layer_errors",
    "bar_chart_html",
    "example_image",
]

DEGRADATIONS = ("rain streaks", "gaussian noise", "none (the image is already degraded)")
DEMO_FOLDER = os.path.join("eqreg-demo", "model")  # what `eqreg-hf demo` writes
MAX_SIDE = 256  # images are resized so that the longer side is at most this (CPU-friendly)


@dataclass
class AppModel:
    """A loaded model and what the demo needs to know about it."""

    model: nn.Module
    name: str
    taps: list[str]
    group_order: int
    restorer: bool  # image in, image of the same size out


def default_model_source() -> str:
    """The model ``eqreg-hf app`` shows without an argument: the demo's saved folder, if it is there."""
    if os.path.isfile(os.path.join(DEMO_FOLDER, "eqreg_config.json")):
        return DEMO_FOLDER
    raise ValueError(
        f"No model given and no {DEMO_FOLDER!r} here: run `eqreg-hf demo` first (it writes that folder), "
        "or pass a saved model folder or a Hub id: eqreg-hf app FOLDER_OR_ID."
    )


def _resolve_folder(source: str) -> str:
    """A local folder as is; ``user/name`` is downloaded from the Hub (or read from its cache when
    offline)."""
    if os.path.isdir(source):
        return source
    if source.count("/") == 1 and not source.startswith((".", "/")) and not os.path.exists(source):
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(source)
        except Exception as err:  # offline, unknown repo, no access: one line that says what to do
            raise ValueError(
                f"Could not get the model {source!r} from the Hub ({type(err).__name__}): check the id "
                "and the network, or pass a local folder (e.g. eqreg-demo/model)."
            ) from None
    raise ValueError(
        f"{source!r} is neither a model folder nor a Hub id ('user/name'): pass a folder written by "
        "eqreg-hf (e.g. eqreg-demo/model) or a Hub repository id."
    )


def load_app_model(source: str) -> AppModel:
    """Load a saved model folder (``eqreg_hf.hub.save_folder`` / the training commands) or a Hub id."""
    from eqreg_hf.hub import load_folder

    folder = _resolve_folder(source)
    model, config = load_folder(folder)
    model.eval()
    t = config.group_order if config is not None and config.group_order > 1 else 4
    taps = _taps(model, config, t)
    with torch.no_grad():
        probe = torch.rand(1, 3, 16, 16)
        try:
            out = model(probe)
        except Exception:  # a classifier made for one input size, for instance
            out = None
    restorer = isinstance(out, torch.Tensor) and out.shape == probe.shape
    name = os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
    return AppModel(model=model, name=name, taps=taps, group_order=t, restorer=restorer)


def _taps(model: nn.Module, config: Any, t: int) -> list[str]:
    if config is not None and isinstance(config.layers, list):
        return list(config.layers)
    if callable(getattr(model, "eqreg_layers", None)):
        return list(model.eqreg_layers(t))
    from eqreg_hf.core.config import EqRegConfig
    from eqreg_hf.core.selection import resolve_taps

    return [spec.name for spec in resolve_taps(model, EqRegConfig(layers="auto", group_order=t))]


def _fit(image: np.ndarray) -> np.ndarray:
    """Float RGB ``[H, W, 3]`` in [0, 1], the longer side at most MAX_SIDE, both sides even (exact 90°
    turns)."""
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = array[:, :, :3]
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(array)
    scale = min(1.0, MAX_SIDE / max(pil.size))
    w, h = (max(8, int(round(s * scale)) // 2 * 2) for s in pil.size)
    return np.asarray(pil.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0


def example_image() -> np.ndarray:
    """A held-out photograph of the built-in benchmark (scikit-image's 'chelsea'), as uint8 RGB."""
    from eqreg_hf.data.synthetic import load_photo

    return (load_photo("chelsea", size=(128, 192)) * 255).round().astype(np.uint8)


def degrade(clean: np.ndarray, degradation: str, seed: int = 0) -> np.ndarray:
    """The degraded input: synthetic rain (the benchmark's model), Gaussian noise σ = 15/255, or the image
    itself."""
    from eqreg_hf.data.synthetic import add_rain

    if degradation not in DEGRADATIONS:
        raise ValueError(f"Unknown degradation {degradation!r}. Choose between {list(DEGRADATIONS)}.")
    if degradation == "rain streaks":
        return add_rain(clean, seed=seed)
    if degradation == "gaussian noise":
        noise = np.random.default_rng(seed).normal(0.0, 15 / 255, clean.shape).astype(np.float32)
        return np.clip(clean + noise, 0.0, 1.0)
    return clean


def _run(model: nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        out = model(x)
    return out[0].clamp(0, 1).permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def restore_image(app: AppModel, image: np.ndarray, degradation: str, seed: int = 0) -> dict[str, Any]:
    """Degrade ``image`` (taken as the clean one unless the degradation is 'none'), restore it, score both.

    Returns:
        ``{"input", "restored", "clean" (None without a clean reference), "psnr_input", "psnr_restored"}``;
        images as float ``[H, W, 3]`` in [0, 1], PSNR in dB against the clean image (None without one).
    """
    if not app.restorer:
        raise ValueError(
            f"{app.name} is not an image-restoration model (its output is not an image of the input's "
            "size): the restoration view needs a restorer, e.g. a train-derain folder."
        )
    clean = _fit(image)
    noisy = degrade(clean, degradation, seed)
    restored = _run(app.model, noisy)
    has_clean = degradation != DEGRADATIONS[-1]
    return {
        "input": noisy,
        "restored": restored,
        "clean": clean if has_clean else None,
        "psnr_input": _psnr(noisy, clean) if has_clean else None,
        "psnr_restored": _psnr(restored, clean) if has_clean else None,
    }


def rotation_consistency(app: AppModel, image: np.ndarray, k: int = 1) -> dict[str, Any]:
    """Restore the image turned by k·90°, turn the result back, compare with restoring the image itself.

    Returns:
        ``{"restored", "restored_rotated" (turned back), "difference" (a heat map, [H, W, 3] in [0, 1]),
        "relative_error" (‖f(x) − R_k⁻¹ f(R_k x)‖ / ‖f(x)‖), "max_abs"}``. An equivariant restorer gives 0.
    """
    if k % 4 == 0:
        raise ValueError(f"k={k} is not a rotation: choose k = 1, 2 or 3 (90°, 180°, 270°).")
    x = _fit(image)
    direct = _run(app.model, x)
    turned = np.rot90(_run(app.model, np.ascontiguousarray(np.rot90(x, k))), -k)
    diff = np.abs(direct - turned).mean(axis=2)
    scale = max(float(diff.max()), 1e-8)
    d = diff / scale
    heat = np.stack([np.sqrt(d), d**2, np.zeros_like(d)], axis=2)  # black = equal, red -> yellow = large
    rel = float(np.linalg.norm(direct - turned) / max(np.linalg.norm(direct), 1e-12))
    return {
        "restored": direct,
        "restored_rotated": np.ascontiguousarray(turned),
        "difference": heat.astype(np.float32),
        "relative_error": rel,
        "max_abs": float(diff.max()),
    }


def layer_errors(app: AppModel, image: np.ndarray) -> dict[str, float]:
    """The model's per-layer equivariance error on this image (its taps, its group), as ``{tap: error}``."""
    from eqreg_hf.core.measure import equivariance_error

    x = torch.from_numpy(_fit(image)).permute(2, 0, 1)[None]
    side = min(x.shape[-2:])
    side -= 1 - side % 2  # an odd square crop: strided taps stay aligned under quarter turns
    x = x[..., :side, :side]
    report = equivariance_error(app.model, x, layers=app.taps, group_order=app.group_order)
    return {name: float(value) for name, value in report.items()}


def bar_chart_html(errors: dict[str, float], title: str = "Equivariance error per layer") -> str:
    """A horizontal bar chart in plain HTML: one ``.eq-bar`` per layer (0 = equivariant, ~1.4 = unrelated)."""
    top = max([1.5, *errors.values()]) if errors else 1.5
    rows = []
    for name, value in errors.items():
        width = 100.0 * value / top
        rows.append(
            f'<div class="eq-row"><span class="eq-name">{html.escape(name)}</span>'
            f'<span class="eq-track"><span class="eq-bar" data-tap="{html.escape(name)}" '
            f'data-value="{value:.6f}" '
            f'style="display:inline-block;height:12px;width:{width:.1f}%;background:#4f7ccf"></span></span>'
            f'<span class="eq-value">{value:.3f}</span></div>'
        )
    style = (
        "<style>.eq-row{display:flex;gap:8px;align-items:center;font:12px monospace}"
        ".eq-name{width:11em;overflow:hidden;text-overflow:ellipsis}.eq-track{flex:1;background:#eee}"
        ".eq-value{width:4em;text-align:right}</style>"
    )
    return f'{style}<div class="eq-chart"><b>{html.escape(title)}</b>{"".join(rows)}</div>'
