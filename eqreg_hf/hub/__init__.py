"""Hub folders, model cards and uploads (``huggingface_hub``, ``safetensors``).

    folder.py     save_folder / load_folder / write_hub_folder / validate_hub_folder: one folder that
                  the Hub, timm, transformers and ``PyTorchModelHubMixin`` all read
    card.py       make_model_card: the model card (``model-index`` with the task metrics and the
                  equivariance error)
    push.py       push_folder: validate, then one commit to the Hub
    arguments.py  what folder and card both take: the framework kind (detect_kind) and the EQ-Reg config
    offline.py    hub_offline: the one reader of HF_HUB_OFFLINE

This layer imports only from ``eqreg_hf.core`` (and third-party libraries).
"""

from __future__ import annotations

from eqreg_hf.hub.arguments import KINDS, detect_kind
from eqreg_hf.hub.card import make_model_card
from eqreg_hf.hub.folder import (
    HubFolderError,
    folder_kind,
    hub_folder_files,
    load_folder,
    save_folder,
    validate_hub_folder,
    write_hub_folder,
)
from eqreg_hf.hub.offline import hub_offline
from eqreg_hf.hub.push import HubPushError, push_folder

__all__ = [
    "KINDS",
    "HubFolderError",
    "HubPushError",
    "detect_kind",
    "folder_kind",
    "hub_folder_files",
    "hub_offline",
    "load_folder",
    "make_model_card",
    "push_folder",
    "save_folder",
    "validate_hub_folder",
    "write_hub_folder",
]
