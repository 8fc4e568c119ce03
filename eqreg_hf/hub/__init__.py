"""Hub folders, model cards and uploads (``huggingface_hub``, ``safetensors``).

    folder.py   save_folder / load_folder / write_hub_folder: one folder that the Hub, timm,
                transformers and ``PyTorchModelHubMixin`` all read
    card.py     the model card (``model-index`` with the task metrics and the equivariance error)
    push.py     push_folder: validate, then one commit to the Hub
"""

from __future__ import annotations

from eqreg_hf.hub.folder import (KINDS, HubFolderError, HubPushError, detect_kind, folder_kind, hub_folder_files,
                                 load_folder, make_model_card, push_folder, save_folder, validate_hub_folder,
                                 write_hub_folder)

__all__ = ["KINDS", "HubFolderError", "HubPushError", "detect_kind", "folder_kind", "hub_folder_files", "load_folder",
           "make_model_card", "push_folder", "save_folder", "validate_hub_folder", "write_hub_folder"]
