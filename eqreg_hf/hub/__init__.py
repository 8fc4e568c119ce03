"""Hub folders, model cards and uploads (``huggingface_hub``, ``safetensors``).

    folder.py         save_folder / load_folder / write_hub_folder: one folder that the Hub, timm,
                      transformers and ``PyTorchModelHubMixin`` all read
    formats.py        the Hub formats ("mixin", "timm", "transformers"), one class each, in one registry
    model_classes.py  the model classes a folder may name (nothing else is imported when loading)
    layout.py         the folder's file names and HubFolderError
    atomic.py         a folder is built next to its target and renamed into place
    validate.py       validate_hub_folder: every file the Hub needs is there and parses
    card.py           make_model_card: the model card (``model-index`` with the task metrics and the
                      equivariance error)
    card_facts.py     CardFacts: what a card states (task, metrics, dataset, training, ...)
    preprocessing.py  the data config a timm / transformers model was trained with
    push.py           push_folder: validate, then one commit to the Hub
    arguments.py      what folder and card both take: the format (detect_kind) and the EQ-Reg config
    offline.py        hub_offline: the one reader of HF_HUB_OFFLINE

This layer imports only from ``eqreg_hf.core`` (and third-party libraries).
"""

from __future__ import annotations

from eqreg_hf.hub.arguments import KINDS, detect_kind
from eqreg_hf.hub.card import make_model_card
from eqreg_hf.hub.card_facts import CardFacts
from eqreg_hf.hub.folder import folder_kind, load_folder, save_folder, write_hub_folder
from eqreg_hf.hub.formats import FORMATS, HubFormat, hub_format
from eqreg_hf.hub.layout import HubFolderError
from eqreg_hf.hub.model_classes import MODEL_CLASSES, register_model_class
from eqreg_hf.hub.offline import hub_offline
from eqreg_hf.hub.push import HubPushError, push_folder
from eqreg_hf.hub.validate import hub_folder_files, validate_hub_folder

__all__ = [
    "FORMATS",
    "KINDS",
    "MODEL_CLASSES",
    "CardFacts",
    "HubFolderError",
    "HubFormat",
    "HubPushError",
    "detect_kind",
    "folder_kind",
    "hub_folder_files",
    "hub_format",
    "hub_offline",
    "load_folder",
    "make_model_card",
    "push_folder",
    "register_model_class",
    "save_folder",
    "validate_hub_folder",
    "write_hub_folder",
]
