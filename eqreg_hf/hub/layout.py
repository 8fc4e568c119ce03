"""What a Hub folder holds: its file names, the error for an incomplete one, and reading its JSON files.

config.json          how to rebuild the network (format of its framework)
model.safetensors    the weights
eqreg_config.json    the EQ-Reg settings used in training (``EqRegConfig.save_pretrained``)
eqreg_model.json     which format wrote the folder (and, for our own networks, the class)
README.md            the model card, with ``model-index`` metadata
"""

from __future__ import annotations

from typing import Any

from eqreg_hf.core.io import read_json_object

__all__ = ["CARD_NAME", "HubFolderError", "MODEL_INFO_NAME", "WEIGHTS_NAMES", "read_folder_json"]

MODEL_INFO_NAME = "eqreg_model.json"
WEIGHTS_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CARD_NAME = "README.md"


class HubFolderError(ValueError):
    """A folder is not a complete Hub folder (the message names the missing file and the fix)."""


def read_folder_json(path: str) -> dict[str, Any]:
    """One JSON object of a Hub folder; a :class:`HubFolderError` naming the file when it does not parse."""
    try:
        return read_json_object(path, "re-save the folder with eqreg_hf.hub.save_folder(model, folder)")
    except ValueError as err:
        raise HubFolderError(str(err)) from None
