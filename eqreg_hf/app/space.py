"""A folder that runs as a Hugging Face Space: the web demo around one saved model.

``eqreg-hf space MODEL_FOLDER SPACE_DIR [--push USER/SPACE]`` writes::

    SPACE_DIR/
      README.md         the Space card header (sdk: gradio, app_file: app.py) and a pointer to the model card
      app.py            builds the demo (eqreg_hf.app.ui) around ./model and launches it
      requirements.txt  eqreg-hf's own dependencies (from the installed package's metadata) and gradio
      model/            the model folder (checked like a push: weights, config, card, eqreg_config.json)
      eqreg_hf/         this library's source (pure Python), so the Space needs no package index entry for it

and, with ``--push``, uploads the folder to a Space repository in one commit (the checks of
``eqreg-hf push`` first: the id, online mode, a token).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
from typing import Any

__all__ = ["write_space", "push_space", "space_requirements", "check_servable", "SPACE_FILES"]

SPACE_FILES = ("README.md", "app.py", "requirements.txt")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

APP_PY = '''"""Hugging Face Space: the EQ-Reg web demo around the model in ./model
(written by `eqreg-hf space`)."""

from eqreg_hf.app.ui import launch_app

launch_app("model", host="0.0.0.0", port=7860)
'''


def space_requirements() -> list[str]:
    """The requirements of a Space: the installed eqreg-hf's dependencies (extras left out) and gradio."""
    try:
        requires = importlib.metadata.requires("eqreg-hf") or []
    except importlib.metadata.PackageNotFoundError:  # a source checkout that is not installed
        requires = []
    lines = [r for r in requires if "extra ==" not in r]
    try:
        lines.append(f"gradio=={importlib.metadata.version('gradio')}")
    except importlib.metadata.PackageNotFoundError:
        lines.append("gradio")
    return lines


def _card(title: str, model_id: str | None, sdk_version: str | None) -> str:
    header = ["---", f"title: {title}", "emoji: 🌧️", "colorFrom: blue", "colorTo: gray", "sdk: gradio"]
    if sdk_version:
        header.append(f"sdk_version: {sdk_version}")
    header += ["app_file: app.py", "pinned: false", "license: apache-2.0"]
    if model_id:
        header += ["models:", f"- {model_id}"]
    header.append("---")
    body = (
        f"\n# {title}\n\nThe EQ-Reg web demo (eqreg-hf): upload an image, degrade it, restore it; see the "
        "rotation-consistency view (restore the turned image, turn it back, compare) and the model's "
        "per-layer equivariance error. The model and its card are in [`model/`](model/README.md).\n"
    )
    return "\n".join(header) + "\n" + body


def check_servable(model_folder: str) -> None:
    """Load the folder as the web demo does (its task, its training degradation, its group and taps); a
    folder the demo cannot serve is a one-line ValueError."""
    from eqreg_hf.app.restore import load_app_model

    try:
        load_app_model(model_folder)
    except ValueError as err:
        raise ValueError(
            f"The web demo cannot serve {model_folder!r}: {' '.join(str(err).split())}"
        ) from None
    except Exception as err:  # weights the framework refuses, a network that does not build, ...
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"The web demo cannot load {model_folder!r} ({type(err).__name__}: {first}); re-save it with "
            "a training command or eqreg_hf.hub.write_hub_folder."
        ) from err


def write_space(
    model_folder: str, space_dir: str, title: str | None = None, model_id: str | None = None
) -> list[str]:
    """Write a Space folder around ``model_folder`` (see the module docstring); returns the files written.

    Raises:
        ValueError / HubFolderError: the model folder is incomplete or one the web demo cannot serve
            (:func:`check_servable`), or ``space_dir`` holds other files.
    """
    from eqreg_hf.hub import validate_hub_folder

    validate_hub_folder(model_folder)
    check_servable(model_folder)  # before anything is written
    if os.path.exists(space_dir) and (not os.path.isdir(space_dir) or os.listdir(space_dir)):
        raise ValueError(f"{space_dir!r} exists and is not an empty folder: give a new folder for the Space.")
    title = title or os.path.basename(os.path.normpath(model_folder))
    if title == "model":
        title = os.path.basename(os.path.dirname(os.path.abspath(model_folder))) or "EQ-Reg demo"
    title = re.sub(r"[^A-Za-z0-9 ._-]", "-", title)[:60]
    os.makedirs(space_dir, exist_ok=True)
    shutil.copytree(model_folder, os.path.join(space_dir, "model"), ignore=_IGNORE)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copytree(package, os.path.join(space_dir, "eqreg_hf"), ignore=_IGNORE)
    try:
        sdk_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        sdk_version = None
    texts = {
        "README.md": _card(title, model_id, sdk_version),
        "app.py": APP_PY,
        "requirements.txt": "\n".join(space_requirements()) + "\n",
    }
    for name, text in texts.items():
        with open(os.path.join(space_dir, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    return sorted(
        os.path.relpath(os.path.join(root, f), space_dir).replace(os.sep, "/")
        for root, _, files in os.walk(space_dir)
        for f in files
    )


def push_space(space_dir: str, space_id: str, private: bool = False, token: str | None = None) -> Any:
    """Upload a :func:`write_space` folder to the Space ``space_id`` in ONE commit; returns the commit URL.

    Raises:
        ValueError: a bad id or a folder that is not a Space folder.
        HubPushError: offline, no token, or the Hub refused (one line, says what to do).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from eqreg_hf.hub.push import HubPushError, check_push_ready

    missing = [f for f in SPACE_FILES if not os.path.isfile(os.path.join(space_dir, f))]
    if missing:
        raise ValueError(
            f"{space_dir!r} is not a Space folder (no {', '.join(missing)}): write one with "
            "eqreg-hf space MODEL_FOLDER SPACE_DIR."
        )
    token = check_push_ready(space_id, token)
    files = sorted(
        os.path.relpath(os.path.join(root, f), space_dir).replace(os.sep, "/")
        for root, dirs, names in os.walk(space_dir)
        for f in names
        if "__pycache__" not in root
    )
    api = HfApi(token=token)
    try:
        api.create_repo(space_id, private=private, exist_ok=True, repo_type="space", space_sdk="gradio")
        info = api.create_commit(
            repo_id=space_id,
            repo_type="space",
            commit_message="EQ-Reg demo (eqreg-hf space)",
            operations=[
                CommitOperationAdd(path_in_repo=f, path_or_fileobj=os.path.join(space_dir, f)) for f in files
            ],
        )
    except Exception as err:
        raise HubPushError(
            f"The Space {space_id!r} was not pushed ({type(err).__name__}: "
            f"{' '.join(str(err).split())[:200]}): check the network and the token's write access, "
            "then run the command again."
        ) from err
    return getattr(info, "commit_url", None) or str(info)
