"""The Gradio web demo: pick or upload an image, degrade it, restore it, and see what EQ-Reg changes.

Three views, side by side: input / restored / clean with PSNR; the rotation-consistency view (restore
the image turned by k·90°, turn the result back, show the difference map and its size); the model's
per-layer equivariance error as a bar chart. Needs the optional extra: ``pip install -e ".[app]"``.

    from eqreg_hf.app import build_app
    build_app("eqreg-demo/model").launch()
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eqreg_hf.app.restore import (
    NO_DEGRADATION,
    AppModel,
    bar_chart_html,
    consistency_elements,
    example_image,
    layer_errors,
    load_app_model,
    restore_image,
    rotation_consistency,
)

__all__ = ["build_app", "launch_app", "require_gradio", "shown_error"]


def require_gradio() -> Any:
    """``gradio``, or a one-line error naming the extra that installs it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the demo sends nothing anywhere unless asked
    try:
        import gradio
    except ModuleNotFoundError:
        raise ValueError(
            'The web demo needs gradio, which is not installed: pip install -e ".[app]" '
            "(or pip install gradio)."
        ) from None
    return gradio


def _fmt(value: float | None) -> str:
    return "n/a (no clean image)" if value is None else f"{value:.2f}"


def _show(image: np.ndarray | None) -> np.ndarray | None:
    """What an image widget takes: a grey ``[H, W, 1]`` image as ``[H, W]``."""
    return image[:, :, 0] if image is not None and image.ndim == 3 and image.shape[2] == 1 else image


def shown_error(err: Exception) -> str:
    """The one line the page shows for a failed run: the message (a ValueError's says what to do), else
    the exception's type and first line."""
    text = " ".join(str(err).split())[:400]
    return text if isinstance(err, ValueError) and text else f"{type(err).__name__}: {text or 'no message'}"


def _run(app: AppModel, image: np.ndarray | None, degradation: str, turn: str) -> tuple:
    image = example_image() if image is None else image
    title = f"Equivariance error per layer ({app.group})"
    if not app.restorer:
        note = f"{app.name} is a {app.task} model: the demo shows its per-layer equivariance error only."
        return (
            image,
            None,
            None,
            "n/a",
            "n/a",
            None,
            None,
            note,
            bar_chart_html(layer_errors(app, image), title),
        )
    out = restore_image(app, image, degraded=degradation == NO_DEGRADATION)
    view = rotation_consistency(app, out["input"], consistency_elements(app)[turn])
    consistency = (
        f"restore(x) vs undo(restore({turn}(x))): relative difference {view['relative_error']:.4f}, largest "
        f"pixel difference {view['max_abs']:.4f} (0 = a perfectly consistent restorer)"
    )
    bars = bar_chart_html(layer_errors(app, out["input"]), title)
    images = [_show(out[k]) for k in ("input", "restored", "clean")]
    psnr = [_fmt(out["psnr_input"]), _fmt(out["psnr_restored"])]
    return (*images, *psnr, _show(view["restored_rotated"]), view["difference"], consistency, bars)


def _handler(app: AppModel):
    gr = require_gradio()

    def run(image: np.ndarray | None, degradation: str, turn: str):
        try:
            return _run(app, image, degradation, turn)
        except Exception as err:  # the page shows one line, not a traceback
            raise gr.Error(shown_error(err)) from None

    return run


def build_app(source: str | AppModel) -> Any:
    """The Gradio ``Blocks`` of the demo for a saved model folder, a Hub id, or a loaded :class:`AppModel`."""
    gr = require_gradio()
    app = source if isinstance(source, AppModel) else load_app_model(source)
    labels, turns = app.entry.labels, list(consistency_elements(app))
    choices = [app.entry.describe(app.settings), NO_DEGRADATION]  # the model's own degradation, or none
    with gr.Blocks(title=f"EQ-Reg demo: {app.name}") as demo:
        gr.Markdown(
            f"# EQ-Reg demo: `{app.name}` ({app.task}, {len(app.taps)} tapped layers, {app.group})\n"
            f"Degradation: {app.entry.describe(app.settings)}. Upload an image (taken as the clean one) and "
            "press **Run**.",
            elem_id="summary",
        )
        with gr.Row():
            image = gr.Image(
                type="numpy",
                label="image (clean; empty: the example photo)",
                elem_id="upload",
                sources=["upload", "clipboard"],
            )
            with gr.Column():
                example = gr.Button("Use the example photo", elem_id="example")
                degradation = gr.Dropdown(
                    choices, value=choices[0], label="degradation", elem_id="degradation"
                )
                turn = gr.Radio(
                    turns, value=turns[0], label="transformation for the consistency view", elem_id="turn"
                )
                button = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Row():
            shown_input = gr.Image(label=labels[0], elem_id="input-image", interactive=False)
            restored = gr.Image(label=labels[1], elem_id="restored-image", interactive=False)
            clean = gr.Image(label=labels[2], elem_id="clean-image", interactive=False)
        with gr.Row():
            psnr_in = gr.Textbox(label="PSNR of the input (dB)", elem_id="psnr-input", interactive=False)
            psnr_out = gr.Textbox(
                label="PSNR of the restored image (dB)", elem_id="psnr-restored", interactive=False
            )
        gr.Markdown("## Rotation consistency")
        with gr.Row():
            turned = gr.Image(
                label="restore the transformed image, transform back",
                elem_id="turned-image",
                interactive=False,
            )
            difference = gr.Image(
                label="difference map (black = equal, yellow = largest)",
                elem_id="difference-image",
                interactive=False,
            )
        consistency = gr.Markdown(elem_id="consistency")
        bars = gr.HTML(elem_id="layer-bars")
        example.click(example_image, outputs=image)
        button.click(
            _handler(app),
            inputs=[image, degradation, turn],
            outputs=[shown_input, restored, clean, psnr_in, psnr_out, turned, difference, consistency, bars],
        )
    return demo


def launch_app(
    source: str | AppModel, host: str = "127.0.0.1", port: int | None = None, block: bool = True
) -> Any:
    """Build and serve the demo (system fonts only: nothing is fetched from the internet). Returns the
    Blocks."""
    gr = require_gradio()
    demo = build_app(source)
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme,
        quiet=not block,
        footer_links=[],
    )
    return demo
