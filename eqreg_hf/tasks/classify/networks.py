"""Build image classifiers to fine-tune with EQ-Reg: timm by name, transformers from a config or folder.

    model = create_classifier("resnet18", num_classes=10)                  # timm, pretrained if reachable
    model = create_classifier("convnext_atto", 10, pretrained=False)      # random weights
    model = create_classifier("hf:path/to/config-or-folder", 10)          # transformers

Pretrained weights come from the Hugging Face Hub (or its local cache). When they cannot be had
(offline, no weights for that name), the model is built with random weights and ONE line says so;
nothing waits on network retries (the Hub is probed once with a short timeout).
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from typing import Any

from torch import nn

from eqreg_hf.hub.offline import hub_offline

__all__ = [
    "create_classifier",
    "create_timm_classifier",
    "create_transformers_classifier",
    "hub_reachable",
    "HF_PREFIX",
]

logger = logging.getLogger(__name__)

HF_PREFIX = "hf:"


def hub_reachable(timeout: float = 2.0, host: str = "huggingface.co") -> bool:
    """True when the Hub answers a TCP connection within ``timeout`` s and offline mode is off."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "")
    if endpoint:
        host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0] or host
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _say(message: str) -> None:
    # A warning reaches stderr even when logging is not configured (logging's last-resort handler).
    logger.warning(message)


def _cached_timm_weights(name: str) -> str | None:
    """Path of the pretrained weights of timm model ``name`` in the local Hub cache, if any."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return None
        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            path = try_to_load_from_cache(repo, filename)
            if isinstance(path, str) and os.path.isfile(path):
                return path
    except Exception:  # an unusual cfg layout is no reason to fail: random weights follow
        return None
    return None


def _timm_create(name: str, pretrained: bool, num_classes: int, image_size: Any, kwargs: dict) -> nn.Module:
    import timm

    kw = dict(kwargs)
    if image_size is not None:
        kw.setdefault("img_size", image_size)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kw)
    except TypeError as err:
        # CNNs take any input size and have no img_size argument.
        if "img_size" in kw and "img_size" in str(err) and "img_size" not in kwargs:
            kw.pop("img_size")
            return _timm_create(name, pretrained, num_classes, None, kw)
        if "unexpected keyword argument" in str(err) or "got multiple values" in str(err):
            raise ValueError(
                f"timm model {name!r} does not take these arguments ({err}); check the model's "
                f"constructor (model_kwargs / --model-kwargs: {sorted(kwargs)})."
            ) from None
        raise


def create_timm_classifier(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    image_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm model with a fresh ``num_classes`` head; pretrained weights when available, else random.

    Args:
        name: a timm model name (``timm.list_models()``), e.g. "resnet18", "convnext_atto",
            "vit_tiny_patch16_224", or ``"local-dir:/path"`` for a saved timm folder.
        num_classes: classes of the new head.
        pretrained: try pretrained weights (Hub or cache). Unavailable -> random init, one message.
        image_size: passed as ``img_size`` to models that have one (ViT, Swin: the patch grid and
            windows depend on it); ignored by CNNs.
        **kwargs: more ``timm.create_model`` arguments (``drop_path_rate=0.1``, ``depth=4``, ...).

    Example:
        >>> m = create_timm_classifier("resnet18", 10, pretrained=False)
        >>> m.num_classes
        10
    """
    import timm

    if not name.startswith(("local-dir:", "hf-hub:", "hf_hub:")) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(
            f"Unknown timm model {name!r}."
            + (f" Did you mean one of {close}?" if close else "")
            + " List models with timm.list_models('resnet*'),"
            + " or use 'hf:<config or folder>' for transformers."
        )
    if not pretrained:
        return _timm_create(name, False, num_classes, image_size, kwargs)
    if name.startswith("local-dir:"):
        return _timm_create(name, True, num_classes, image_size, kwargs)
    if not name.startswith(("hf-hub:", "hf_hub:")) and not timm.models.get_pretrained_cfg(name):
        _say(f"timm has no pretrained weights for {name!r}; using {name} with random initialisation.")
        return _timm_create(name, False, num_classes, image_size, kwargs)
    cached = None if name.startswith(("hf-hub:", "hf_hub:")) else _cached_timm_weights(name)
    if cached is not None:
        kw = dict(kwargs, pretrained_cfg_overlay=dict(file=cached))
        return _timm_create(name, True, num_classes, image_size, kw)
    if not hub_reachable():
        _say(
            f"Pretrained weights for {name!r} are not cached and the Hugging Face Hub is unreachable "
            f"(offline); using {name} with random initialisation."
        )
        return _timm_create(name, False, num_classes, image_size, kwargs)
    try:
        return _timm_create(name, True, num_classes, image_size, kwargs)
    except (OSError, RuntimeError, ValueError) as err:  # hub errors are OSErrors; missing files RuntimeErrors
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        _say(
            f"Could not load pretrained weights for {name!r} ({first}); training {name} from random "
            "initialisation."
        )
        return _timm_create(name, False, num_classes, image_size, kwargs)


def create_transformers_classifier(
    source: Any,
    num_classes: int,
    pretrained: bool = True,
    image_size: int | None = None,
    **config_kwargs: Any,
) -> nn.Module:
    """A transformers image classifier from a config object, a config/model folder, a JSON file or a Hub id.

    Weights are loaded when ``source`` is a folder (or id) that has them and ``pretrained``; otherwise
    the model is built from the config with random weights (``AutoModelForImageClassification.from_config``).
    The head is (re)sized to ``num_classes``.

    Args:
        source: ``PretrainedConfig``, folder, ``config.json`` path or Hub id.
        num_classes: number of labels.
        pretrained: load weights when there are any.
        image_size: sets ``config.image_size`` (ViT / Swin position embeddings).
        **config_kwargs: config overrides, e.g. ``hidden_size=64, num_hidden_layers=2``.

    Example:
        >>> from transformers import ConvNextConfig
        >>> config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1] * 4)
        >>> m = create_transformers_classifier(config, 3)
        >>> m.config.num_labels
        3
    """
    from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig

    overrides = dict(config_kwargs, num_labels=num_classes)
    if image_size is not None:
        overrides["image_size"] = image_size
    if isinstance(source, PretrainedConfig):
        config = source
        for k, v in overrides.items():
            setattr(config, k, v)
        return AutoModelForImageClassification.from_config(config)
    source = os.fspath(source)
    if source.endswith(".json") and os.path.isfile(source):
        import json

        with open(source, encoding="utf-8") as fh:
            data = json.load(fh)
        if "model_type" not in data:
            raise ValueError(f"{source!r} has no 'model_type'; it is not a transformers config.json.")
        config = AutoConfig.for_model(**{**data, **overrides})
        return AutoModelForImageClassification.from_config(config)
    has_weights = os.path.isdir(source) and any(
        os.path.isfile(os.path.join(source, f))
        for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )
    if pretrained and (has_weights or (not os.path.isdir(source) and hub_reachable())):
        return AutoModelForImageClassification.from_pretrained(
            source, ignore_mismatched_sizes=True, **overrides
        )
    config = AutoConfig.from_pretrained(source, **overrides)
    if pretrained:
        _say(f"No weights at {source!r}; building {type(config).__name__} with random weights.")
    return AutoModelForImageClassification.from_config(config)


def create_classifier(
    name: str,
    num_classes: int,
    pretrained: bool = True,
    image_size: int | tuple[int, int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """timm model ``name``, or a transformers one for ``"hf:<config or folder or id>"``.

    Example:
        >>> create_classifier("resnet18", 5, pretrained=False).num_classes
        5
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model={name!r} is not valid: give a timm name (e.g. 'resnet18') or 'hf:<folder>'.")
    if name.startswith(HF_PREFIX):
        size = image_size if isinstance(image_size, int) or image_size is None else image_size[0]
        return create_transformers_classifier(name[len(HF_PREFIX) :], num_classes, pretrained, size, **kwargs)
    return create_timm_classifier(name, num_classes, pretrained, image_size, **kwargs)
