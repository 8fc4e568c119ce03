"""``eqreg-hf push PATH REPO_ID``: publish a saved Hub folder in one commit.

Example:
    eqreg-hf push runs/derain/hub me/derain-eqreg --private --commit-message "C4, λ=1e-2"

Check a folder written by eqreg_hf.hub.write_hub_folder / save_folder, create the repository (and
branch) and upload every file in ONE commit. Needs a token: `hf auth login` or HF_TOKEN.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "push",
        help="Publish a saved model folder (weights, card, eqreg_config.json) to the Hugging Face Hub.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", metavar="PATH", help="The folder to publish.")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Target repository, 'user/name' or 'org/name'.")
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument(
        "--revision",
        metavar="BRANCH",
        default=None,
        help="Branch to push to (created from main if missing). Default: main.",
    )
    parser.add_argument("--commit-message", metavar="MSG", default=None, help="Commit message.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.hub import HubFolderError, HubPushError, push_folder

    try:
        url = push_folder(
            args.path,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
        )
    except (HubFolderError, HubPushError, ValueError) as err:
        # One line, no traceback: the message already says what to do. Exit 2: the input is wrong (an
        # incomplete folder, a bad repo id); 1: the Hub or the network refused (offline, no token, no rights).
        print(f"eqreg-hf push: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1 if isinstance(err, HubPushError) else 2
    branch = f" (branch {args.revision})" if args.revision else ""
    print(f"Pushed {args.path} to https://huggingface.co/{args.repo_id}{branch}: {url}")
    return 0
