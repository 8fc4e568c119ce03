"""What the web demo computes, without any UI: load a model, degrade, restore, compare, measure.

Every function takes and returns plain arrays / dicts, so the Gradio app (:mod:`eqreg_hf.app.ui`) only
wires widgets to them and the tests can call them directly. The model is served as it was trained: its
task and its training degradation come from the saved folder (:mod:`eqreg_hf.app.tasks`), its group and
taps from its ``EqRegConfig``.

    model = load_app_model("eqreg-demo/model")          # a saved Hub folder (or a Hub id)
    out = restore_image(model, photo)                   # input / restored / clean, PSNR of each
    view = rotation_consistency(model, photo, (0, 1))   # f(x) vs R_g^-1 f(R_g x): difference map and its size
    bars = layer_errors(model, photo)                   # the model's per-layer equivariance error, its group
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from eqreg_hf.app.tasks import APP_TASKS, AppTask, app_task
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.groups import as_group

__all__ = [
    "AppModel",
    "DEMO_FOLDER",
    "NO_DEGRADATION",
    "load_app_model",
    "default_model_source",
    "restore_image",
    "rotation_consistency",
    "consistency_elements",
    "layer_errors",
    "bar_chart_html",
    "example_image",
]

NO_DEGRADATION = "none (the image is already degraded)"
DEMO_FOLDER = os.path.join("eqreg-demo", "model")  # what `eqreg-hf demo` writes
MAX_SIDE = 256  # images are resized so that the longer side is at most this (CPU-friendly)


@dataclass
class AppModel:
    """A loaded model and what the demo needs to know about it.

    Attributes:
        group: the group the demo measures and mirrors under: the model's EQ-Reg group, else the group its
            card's equivariance error was measured under, else C4.
        task: the saved task (a key of :data:`eqreg_hf.app.tasks.APP_TASKS`).
        settings: the training degradation of that task (``AppTask.settings``).
        config: the folder's ``EqRegConfig`` (its fields and layouts are measured with), or None.
    """

    model: nn.Module
    name: str
    taps: list[str]
    group: str = "C4"
    task: str = "derain"
    settings: dict[str, Any] = field(default_factory=dict)
    config: EqRegConfig | None = None

    @property
    def entry(self) -> AppTask:
        return APP_TASKS[self.task]

    @property
    def restorer(self) -> bool:
        """Whether the demo restores with it (image in, image out) or only measures it (a classifier)."""
        return self.entry.restores

    @property
    def group_order(self) -> int:
        return as_group(self.group).t

    @property
    def input_multiple(self) -> int:
        """The model's inputs have sides that are multiples of this: even (exact turns), and of a window
        size (Swin2SR pads other sizes, which is not rotation-symmetric)."""
        window = getattr(getattr(self.model, "config", None), "window_size", None)
        return math.lcm(2, window) if isinstance(window, int) and window > 0 else 2


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
    """Load a saved model folder (the training commands, ``write_hub_folder``) or a Hub id, with its task,
    training degradation and group; a folder the demo cannot serve is refused in one line."""
    from eqreg_hf.hub import load_folder
    from eqreg_hf.hub.card_facts import saved_group, saved_task

    folder = _resolve_folder(source)
    name = os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
    model, config = load_folder(folder)  # the registered-class guard first: a folder chooses no code
    model.eval()
    saved = saved_task(folder)
    entry = app_task(saved["task"], name)
    settings = entry.settings(saved["degradation"], name)
    group = saved_group(config, saved["equivariance_group"])
    taps = _taps(model, config, group)
    return AppModel(model, name, taps, group, entry.name, settings, config)


def _taps(model: nn.Module, config: EqRegConfig | None, group: str) -> list[str]:
    if config is not None and isinstance(config.layers, list):
        return list(config.layers)
    if callable(getattr(model, "eqreg_layers", None)):
        return list(model.eqreg_layers(as_group(group).size))  # the field size: t for C_t, 2t for D_t
    from eqreg_hf.core.selection import resolve_taps

    return [spec.name for spec in resolve_taps(model, EqRegConfig(layers="auto", group=group))]


def _fit(image: np.ndarray, multiple: int = 2, channels: int = 3) -> np.ndarray:
    """Float ``[H, W, channels]`` in [0, 1] (RGB, or grey for one channel), the longer side at most
    MAX_SIDE, both sides multiples of ``multiple`` (even: exact 90° turns). A float image that already fits
    is returned as it is (a degraded input is not quantised again)."""
    from PIL import Image

    array = np.asarray(image)
    fits = array.ndim == 3 and array.shape[2] == channels and max(array.shape[:2]) <= MAX_SIDE
    if array.dtype == np.float32 and fits and not (array.shape[0] % multiple or array.shape[1] % multiple):
        return array
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    pil = Image.fromarray(array).convert("L" if channels == 1 else "RGB")
    scale = min(1.0, MAX_SIDE / max(pil.size))
    w, h = (max(4 * multiple, int(round(s * scale)) // multiple * multiple) for s in pil.size)
    out = np.asarray(pil.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    return out.reshape(h, w, channels)


def example_image() -> np.ndarray:
    """A held-out photograph of the built-in benchmark (scikit-image's 'chelsea'), as uint8 RGB."""
    from eqreg_hf.data.synthetic import load_photo

    return (load_photo("chelsea", size=(128, 192)) * 255).round().astype(np.uint8)


def _run(model: nn.Module, image: np.ndarray) -> np.ndarray:
    from eqreg_hf.tasks.restore.evaluate import restore  # a transformers output unpacked too

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        out = restore(model, x)
    return out[0].clamp(0, 1).permute(1, 2, 0).numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def restore_image(app: AppModel, image: np.ndarray, degraded: bool = False, seed: int = 0) -> dict[str, Any]:
    """Degrade ``image`` as the model was trained (``app.settings``), restore it, score both; with
    ``degraded=True`` the image is taken as the model's input as it is (no clean reference).

    Returns:
        ``{"input", "restored", "clean" (None without a clean reference), "psnr_input", "psnr_restored"}``;
        images as float ``[H, W, C]`` in [0, 1] (the input of super-resolution is the small one), PSNR in
        dB against the clean image (None without one; the input's after ``AppTask.input_baseline``).
    """
    task = app.entry
    if not app.restorer:
        raise ValueError(
            f"{app.name} is a {app.task} model, not a restorer: the demo shows its per-layer equivariance "
            f"error only (restoring needs one of {sorted(n for n, t in APP_TASKS.items() if t.restores)})."
        )
    if degraded:
        noisy = _fit(image, app.input_multiple, task.channels)
        restored = _run(app.model, noisy)
        return {
            "input": noisy,
            "restored": restored,
            "clean": None,
            "psnr_input": None,
            "psnr_restored": None,
        }
    clean = _fit(image, task.side_multiple(app.settings, app.input_multiple), task.channels)
    noisy = task.degrade(clean, app.settings, seed).astype(np.float32)
    restored = _run(app.model, noisy)
    if restored.shape != clean.shape:
        raise ValueError(
            f"{app.name} turned a {noisy.shape[1]}x{noisy.shape[0]} input into {restored.shape[1]}x"
            f"{restored.shape[0]}, not the clean image's {clean.shape[1]}x{clean.shape[0]}: its folder names "
            f"the task {app.task!r} and {task.describe(app.settings)}; re-save it with its own task."
        )
    return {
        "input": noisy,
        "restored": restored,
        "clean": clean,
        "psnr_input": _psnr(task.input_baseline(noisy, clean.shape), clean),
        "psnr_restored": _psnr(restored, clean),
    }


def consistency_elements(app: AppModel) -> dict[str, tuple[int, int]]:
    """The transformations the consistency view offers, ``{label: (flip, quarter turns)}``: the three
    turns, and for a dihedral group its mirror images (flip the width axis, then turn)."""
    turns = {"90°": (0, 1), "180°": (0, 2), "270°": (0, 3)}
    if as_group(app.group).dihedral:
        turns.update({"mirror": (1, 0), "mirror, then 90°": (1, 1)})
        turns.update({"mirror, then 180°": (1, 2), "mirror, then 270°": (1, 3)})
    return turns


def _act(x: np.ndarray, g: tuple[int, int]) -> np.ndarray:
    """R_g on ``[H, W, C]``: flip the width axis, then turn counter-clockwise (the library's convention)."""
    return np.ascontiguousarray(np.rot90(x[:, ::-1] if g[0] else x, g[1]))


def _undo(y: np.ndarray, g: tuple[int, int]) -> np.ndarray:
    back = np.rot90(y, -g[1])
    return np.ascontiguousarray(back[:, ::-1] if g[0] else back)


def rotation_consistency(app: AppModel, image: np.ndarray, g: int | tuple[int, int] = 1) -> dict[str, Any]:
    """Restore the transformed image, transform the result back, compare with restoring the image itself.

    ``g``: quarter turns k, or ``(flip, k)`` (:func:`consistency_elements`).

    Returns:
        ``{"restored", "restored_rotated" (transformed back), "difference" (a heat map, [H, W, 3] in [0, 1]),
        "relative_error" (‖f(x) − R_g⁻¹ f(R_g x)‖ / ‖f(x)‖), "max_abs"}``. An equivariant restorer gives 0.
    """
    g = (0, g) if isinstance(g, int) else (int(g[0]), int(g[1]))
    if g[0] not in (0, 1) or (g[0] == 0 and g[1] % 4 == 0):
        raise ValueError(
            f"g={g} is not a turn or a mirror image: choose k = 1, 2 or 3, or (1, k) for a mirror."
        )
    x = _fit(image, app.input_multiple, app.entry.channels)
    direct = _run(app.model, x)
    turned = _undo(_run(app.model, _act(x, g)), g)
    diff = np.abs(direct - turned).mean(axis=2)
    scale = max(float(diff.max()), 1e-8)
    d = diff / scale
    heat = np.stack([np.sqrt(d), d**2, np.zeros_like(d)], axis=2)  # black = equal, red -> yellow = large
    rel = float(np.linalg.norm(direct - turned) / max(np.linalg.norm(direct), 1e-12))
    return {
        "restored": direct,
        "restored_rotated": turned,
        "difference": heat.astype(np.float32),
        "relative_error": rel,
        "max_abs": float(diff.max()),
    }


def layer_errors(app: AppModel, image: np.ndarray) -> dict[str, float]:
    """The model's per-layer equivariance error on this image, as ``{tap: error}``: its taps, under its
    group (``app.group``, mirror images included for D_t), read as its ``EqRegConfig`` says (fields,
    layouts)."""
    from eqreg_hf.core.measure import equivariance_error

    x = torch.from_numpy(_fit(image, app.input_multiple, app.entry.channels)).permute(2, 0, 1)[None]
    side = min(x.shape[-2:])
    if app.input_multiple > 2:
        side -= side % app.input_multiple  # a window size: no padding
    else:
        side -= 1 - side % 2  # an odd square crop: strided taps stay aligned under quarter turns
    x = x[..., :side, :side]
    base = app.config if app.config is not None else EqRegConfig()
    grp = as_group(app.group)
    config = dataclasses.replace(base, layers=list(app.taps), group=grp.name, group_order=grp.t)
    report = equivariance_error(app.model, x, config)
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
