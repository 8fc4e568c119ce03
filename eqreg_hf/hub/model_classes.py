"""The model classes a Hub folder may name: only these are ever imported by :func:`eqreg_hf.hub.load_folder`.

A ``PyTorchModelHubMixin`` folder records its class in ``eqreg_model.json`` (``"module:QualName"``). A folder
comes from the internet, so the name it records is untrusted: importing whatever module it names would let a
folder run code (``eqreg_hf.__main__`` runs the command line; ``os:system`` ...). The name is therefore looked
up in :data:`MODEL_CLASSES` *before anything is imported*; any other name is refused in one line.

The library's own networks are listed by qualified name and imported lazily, when a folder names them (this
layer may not import ``eqreg_hf.tasks``). Another class becomes loadable with :func:`register_model_class`:

    >>> from huggingface_hub import PyTorchModelHubMixin
    >>> from torch import nn
    >>> @register_model_class
    ... class MyNet(nn.Module, PyTorchModelHubMixin):
    ...     pass
    >>> model_class(f"{__name__}:MyNet") is MyNet
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from eqreg_hf.hub.layout import HubFolderError

__all__ = [
    "MODEL_CLASSES",
    "MOVED_MODULES",
    "current_path",
    "model_class",
    "qualified_name",
    "register_model_class",
]

# "module:QualName" -> the class, or None until a folder names it (then imported from the module).
MODEL_CLASSES: dict[str, type | None] = {
    "eqreg_hf.tasks.derain.networks:FastDerainer": None,
    "eqreg_hf.tasks.derain.networks:RCDNet": None,
    "eqreg_hf.tasks.derain.networks:StrictC4Derainer": None,
    "eqreg_hf.tasks.restore.networks:DnCNN": None,
    "eqreg_hf.tasks.restore.networks:StrictRestorer": None,
}

# Module prefixes of classes that moved since folders were first saved: old -> new. A folder's
# eqreg_model.json keeps the path its class had when it was written.
MOVED_MODULES = {
    "eqreg_hf.models.derain": "eqreg_hf.tasks.derain.networks",
    "eqreg_hf.models.classification": "eqreg_hf.tasks.classify.networks",
}


def qualified_name(cls: type) -> str:
    """``"module:QualName"`` of a class: what ``eqreg_model.json`` records."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_model_class(cls: type) -> type:
    """Make ``cls`` (a ``PyTorchModelHubMixin`` network) loadable from a folder that names it; returns it,
    so it works as a class decorator."""
    from huggingface_hub import PyTorchModelHubMixin

    if not (isinstance(cls, type) and issubclass(cls, PyTorchModelHubMixin)):
        raise TypeError(
            f"register_model_class({cls!r}): only PyTorchModelHubMixin classes can be loaded from a folder; "
            "make it class Net(nn.Module, PyTorchModelHubMixin)."
        )
    MODEL_CLASSES[qualified_name(cls)] = cls
    return cls


def current_path(path: str) -> str:
    """Where a class saved under an old module lives now (:data:`MOVED_MODULES`); other paths unchanged.

    Example:
        >>> current_path("eqreg_hf.models.derain:FastDerainer")
        'eqreg_hf.tasks.derain.networks:FastDerainer'
    """
    module_name, sep, qualname = str(path).partition(":")
    for old, new in MOVED_MODULES.items():
        if module_name == old or module_name.startswith(old + "."):
            return new + module_name[len(old) :] + sep + qualname
    return str(path)


def model_class(path: Any) -> type:
    """The registered class a folder names (``"module:QualName"``); a :class:`HubFolderError` for any other
    name, raised before anything is imported."""
    key = current_path(path) if isinstance(path, str) else path
    if not isinstance(key, str) or key not in MODEL_CLASSES:
        raise HubFolderError(
            f"The folder names the model class {path!r}, which is not a registered model class, so it is "
            f"not imported; registered: {sorted(MODEL_CLASSES)}. Pass a class you trust, "
            "load_folder(folder, model_cls=ThatClass), or register it with register_model_class."
        )
    cls = MODEL_CLASSES[key]
    if cls is None:
        module_name, _, qualname = key.partition(":")
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        MODEL_CLASSES[key] = cls
    return cls
