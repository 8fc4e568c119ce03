"""``eqreg-hf app [MODEL_FOLDER_OR_HUB_ID]``: the web demo (Gradio; ``pip install -e ".[app]"``).

    eqreg-hf app                          # the folder `eqreg-hf demo` wrote (eqreg-demo/model), if there
    eqreg-hf app runs/derain --port 7861  # any saved model folder, or a Hub id (user/name)

Serve the EQ-Reg web demo for a saved model folder or a Hub id: pick or upload an image, choose a
degradation, see input / restored / clean with PSNR, the rotation-consistency view and the per-layer
equivariance error. Trains nothing; needs the [app] extra (gradio).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help="Web demo (Gradio): restore an image, see the rotation consistency and the per-layer "
        "equivariance error.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL_FOLDER_OR_HUB_ID",
        help="A folder written by eqreg-hf (or save_folder), or a Hub id. Default: eqreg-demo/model.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (default: 127.0.0.1).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default: 7860).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.app.restore import default_model_source, load_app_model
    from eqreg_hf.app.ui import launch_app, require_gradio

    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not valid: give a port between 1 and 65535 (e.g. 7860).")
    require_gradio()  # before loading anything
    source = args.model if args.model is not None else default_model_source()
    app = load_app_model(source)  # a folder the demo cannot serve: one line, before the server starts
    print(
        f"Serving the EQ-Reg demo for {source} ({app.task}, {app.group}) on http://{args.host}:{args.port} "
        "(Ctrl+C stops it)",
        flush=True,
    )
    launch_app(app, host=args.host, port=args.port, block=True)
    return 0
