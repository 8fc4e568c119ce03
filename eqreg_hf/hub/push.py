"""Publishing a Hub folder: validate it, then upload every file in ONE commit.

Example:
    >>> from eqreg_hf.hub import push_folder
    >>> push_folder("runs/derain/hub", "me/derain-eqreg", private=True)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from typing import Any

from eqreg_hf.hub.layout import CARD_NAME
from eqreg_hf.hub.offline import hub_offline
from eqreg_hf.hub.validate import validate_hub_folder

__all__ = ["HubPushError", "push_folder", "fill_repo_id", "check_push_ready"]


class HubPushError(RuntimeError):
    """Publishing failed before anything was uploaded (offline, no token, Hub refused)."""


_PLACEHOLDER_REPO = re.compile(r"YOUR_USER/[A-Za-z0-9_.\-]+")


def fill_repo_id(card_text: str, repo_id: str) -> str:
    """Replace the ``YOUR_USER/<name>`` placeholder a card gets when its repo id was not yet known.

    Example:
        >>> fill_repo_id('load_folder(snapshot_download("YOUR_USER/tiny-derain"))', "me/derain-c4")
        'load_folder(snapshot_download("me/derain-c4"))'
    """
    return _PLACEHOLDER_REPO.sub(repo_id, card_text)


def _card_bytes(root: str, name: str, repo_id: str) -> bytes | None:
    """The model card with its placeholder repo id filled in (:func:`fill_repo_id`); None for
    other files or a card without a placeholder."""
    if name != CARD_NAME:
        return None
    with open(os.path.join(root, name), encoding="utf-8") as fh:
        text = fh.read()
    new = fill_repo_id(text, repo_id)
    return new.encode("utf-8") if new != text else None


def push_folder(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Publish a Hub folder: validate it, create the repo (and branch), upload it in ONE commit.

    Nothing is uploaded unless the folder is complete (:func:`validate_hub_folder`), the Hub is
    reachable (not ``HF_HUB_OFFLINE``) and a token exists. All files go in a single
    ``create_commit``, so the repository never shows half a model.

    Args:
        path: the folder written by :func:`eqreg_hf.hub.write_hub_folder` / :func:`eqreg_hf.hub.save_folder`.
        repo_id: "user/name" or "org/name".
        private: create the repository private (an existing repo keeps its visibility).
        revision: branch to push to (created from main if missing); None = main.
        commit_message: default "Upload EQ-Reg model with eqreg-hf".
        token: a Hub token; default ``HF_TOKEN`` or the token saved by ``hf auth login``.

    Returns:
        The URL of the commit.

    Raises:
        HubFolderError: the folder is incomplete (names the file and the fix).
        HubPushError: offline, no token, or the Hub refused (one line, says what to do).

    Example:
        >>> push_folder("runs/derain/hub", "me/derain-eqreg", private=True)  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    files, token = _ready_to_push(path, repo_id, token)
    root = os.path.abspath(os.fspath(path))
    api = HfApi(token=token)
    try:
        info = _commit_files(
            api,
            root,
            files,
            repo_id,
            private=private,
            revision=revision,
            message=commit_message or "Upload EQ-Reg model with eqreg-hf",
        )
    except Exception as err:
        failure = _push_failure(err, repo_id)
        if failure is None:
            raise
        raise failure from err
    return getattr(info, "commit_url", None) or str(info)


def check_push_ready(repo_id: str, token: str | None = None) -> str:
    """Everything :func:`push_folder` checks except the folder (the repo id, online mode, a token);
    returns the token.

    For commands that push at the end of training (``--push-to-hub``): run it first, so a missing token
    stops the command before the training, not after it.

    Raises:
        ValueError: a malformed repo id.
        HubPushError: offline or no token (one line, says what to do).
    """
    import huggingface_hub

    _check_repo_id(repo_id)
    if hub_offline():
        raise HubPushError(
            "HF_HUB_OFFLINE is set, so nothing was uploaded: unset it (unset HF_HUB_OFFLINE) and run "
            "the push again."
        )
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubPushError(
            "No Hugging Face token found, so nothing was uploaded: run `hf auth login` or set HF_TOKEN "
            "(a token with write access from https://huggingface.co/settings/tokens)."
        )
    return token


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id={repo_id!r} is not valid: use 'user/name' or 'org/name'.")


def _ready_to_push(path: str | os.PathLike, repo_id: str, token: str | None) -> tuple[list[str], str]:
    """The files to upload and the token, once the repo id, the folder, online mode and a token are
    checked."""
    _check_repo_id(repo_id)
    files = validate_hub_folder(path)
    return files, check_push_ready(repo_id, token)


def _commit_files(
    api: Any, root: str, files: list[str], repo_id: str, *, private: bool, revision: str | None, message: str
) -> Any:
    """Create the repo (and branch) if missing, then add every file in one ``create_commit``."""
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    operations = [
        CommitOperationAdd(
            path_in_repo=f, path_or_fileobj=_card_bytes(root, f, repo_id) or os.path.join(root, f)
        )
        for f in files
    ]
    return api.create_commit(
        repo_id=repo_id, operations=operations, commit_message=message, revision=revision, repo_type="model"
    )


def _push_failure(err: Exception, repo_id: str) -> HubPushError | None:
    """The one-line :class:`HubPushError` for an offline, refused or unreachable Hub; None for other
    errors."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # Transport failures (DNS, refused connection, timeout) of the HTTP client the Hub library uses.
    network_errors = (OSError, getattr(hub_errors, "HTTPError", OSError))
    if isinstance(err, OfflineModeIsEnabled):
        return HubPushError(
            "huggingface_hub is in offline mode (HF_HUB_OFFLINE), so nothing was uploaded: unset it and "
            "retry."
        )
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = (
            (f"check that the token has write access to {repo_id.split('/')[0]!r} (hf auth login)")
            if status in (401, 403)
            else "retry later"
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return HubPushError(f"The Hub refused the push of {repo_id!r} (HTTP {status}: {first}): {hint}.")
    if isinstance(err, network_errors):
        return HubPushError(
            f"Could not reach the Hub ({type(err).__name__}: {err}); nothing was committed: check the "
            "network (or HF_ENDPOINT) and run the push again."
        )
    return None
