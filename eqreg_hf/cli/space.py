"""``eqreg-hf space MODEL_FOLDER SPACE_DIR [--push USER/SPACE]``: a Hugging Face Space around a saved model.

    eqreg-hf space eqreg-demo/model my-space                      # write the folder (app.py, ...)
    eqreg-hf space eqreg-demo/model my-space --push me/eqreg-demo  # and upload it as a Gradio Space

Write SPACE_DIR: app.py, requirements.txt, the Space card header (sdk: gradio), the model folder and
this library's source, so the folder runs as a Hugging Face Space; --push uploads it in one commit
(the checks of eqreg-hf push: id, online mode, token).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "space",
        help="Write (and optionally push) a Hugging Face Space that runs the web demo around a saved model.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model_folder", metavar="MODEL_FOLDER", help="A saved model folder (eqreg-demo/model, ...)."
    )
    parser.add_argument("space_dir", metavar="SPACE_DIR", help="A new folder for the Space.")
    parser.add_argument("--title", default=None, help="Title of the Space (default: from the folder name).")
    parser.add_argument("--model-id", default=None, help="The model's Hub id, linked from the Space card.")
    parser.add_argument("--push", metavar="USER/SPACE", default=None, help="Upload the folder to this Space.")
    parser.add_argument("--private", action="store_true", help="Create the Space private (with --push).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.app.space import push_space, write_space
    from eqreg_hf.hub import HubFolderError, HubPushError
    from eqreg_hf.hub.push import check_push_ready

    if args.private and not args.push:
        raise ValueError(
            "--private is set but --push is not, so nothing would be created: add --push USER/SPACE."
        )
    try:
        if args.push:
            check_push_ready(args.push)  # before writing anything
        files = write_space(args.model_folder, args.space_dir, title=args.title, model_id=args.model_id)
        print(
            f"Wrote the Space folder {args.space_dir} ({len(files)} files); run it locally with: "
            f"cd {args.space_dir} && python app.py"
        )
        if args.push:
            url = push_space(args.space_dir, args.push, private=args.private)
            print(f"Pushed to https://huggingface.co/spaces/{args.push}: {url}")
    except (HubPushError, HubFolderError) as err:
        print(f"eqreg-hf space: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1 if isinstance(err, HubPushError) else 2
    return 0
