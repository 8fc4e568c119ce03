"""Hub folders: save -> load round trips for the three kinds, detection, atomic writes."""

from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.hub import HubFolderError, detect_kind, folder_kind, load_folder, save_folder
from eqreg_hf.hub.folder import MODEL_INFO_NAME


class TinyHubNet(nn.Module, PyTorchModelHubMixin):
    """A small conv net defined outside eqreg_hf (its class must be passed to load_folder)."""

    def __init__(self, channels: int = 4, out_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def _tiny_hub_net():
    return TinyHubNet(channels=4, out_channels=2), None, (1, 3, 17, 23)


def _fast_derainer():
    from eqreg_hf.tasks.derain.networks import FastDerainer

    return FastDerainer(channels=4, num_blocks=1), None, (2, 3, 13, 19)


def _timm_resnet():
    timm = pytest.importorskip("timm", reason="timm is needed for the timm round trip")
    return timm.create_model("resnet18", pretrained=False, num_classes=5), None, (1, 3, 33, 29)


def _timm_vit():
    timm = pytest.importorskip("timm", reason="timm is needed for the timm round trip")
    return (
        timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3),
        None,
        (2, 3, 32, 32),
    )


def _hf_vit():
    transformers = pytest.importorskip("transformers", reason="transformers is needed for the round trip")
    cfg = transformers.ViTConfig(
        image_size=24,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return transformers.ViTForImageClassification(cfg), "logits", (2, 3, 24, 24)


def _hf_convnext():
    transformers = pytest.importorskip("transformers", reason="transformers is needed for the round trip")
    cfg = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    return transformers.ConvNextForImageClassification(cfg), "logits", (1, 3, 36, 44)


# (case id, builder, expected kind, model_cls to pass to load_folder)
CASES = [
    ("mixin-test-class", _tiny_hub_net, "mixin", TinyHubNet),
    ("mixin-eqreg-class", _fast_derainer, "mixin", None),  # class imported from eqreg_model.json
    ("timm-resnet18", _timm_resnet, "timm", None),
    ("timm-vit-tiny", _timm_vit, "timm", None),
    ("transformers-vit", _hf_vit, "transformers", None),
    ("transformers-convnext", _hf_convnext, "transformers", None),
]

CONFIGS = {
    "mixin-test-class": EqRegConfig(layers=["conv1"], group_order=4, weight=1e-2),
    "mixin-eqreg-class": EqRegConfig(layers="body.*.conv1", group_order=2, weight=1e-6, distance="fro"),
    "timm-resnet18": EqRegConfig(layers=["layer1.0.conv1"], weight=0.5, fields={"layer1.*": "regular"}),
    "timm-vit-tiny": EqRegConfig(layers="blocks.0", layouts="tokens", prefix_tokens=1, rotated_fraction=0.5),
    "transformers-vit": EqRegConfig(layers="auto", group_order=8, weight=3e-3),
    "transformers-convnext": EqRegConfig(layers=["convnext.encoder.stages.0"], include_identity=True, seed=7),
}


def _out(y, attr):
    return getattr(y, attr) if attr else y


@pytest.mark.parametrize("case_id,build,kind,model_cls", CASES, ids=[c[0] for c in CASES])
def test_round_trip(tmp_path, case_id, build, kind, model_cls):
    torch.manual_seed(0)
    model, out_attr, shape = build()
    model.eval()
    cfg = CONFIGS[case_id]
    assert detect_kind(model) == kind
    folder = save_folder(model, tmp_path / "hub", eqreg_config=cfg)
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "eqreg_config.json", MODEL_INFO_NAME} <= files
    assert folder_kind(folder) == kind
    assert json.load(open(os.path.join(folder, MODEL_INFO_NAME)))["kind"] == kind

    loaded, cfg2 = load_folder(folder, model_cls=model_cls)
    assert type(loaded) is type(model)
    assert not loaded.training
    assert cfg2 == cfg
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for key in sd:
        assert torch.equal(sd[key], sd2[key]), key
    x = torch.rand(*shape)
    with torch.no_grad():
        assert torch.equal(_out(model(x), out_attr), _out(loaded(x), out_attr))


def test_timm_folder_loads_with_timm_itself(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is needed")
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    folder = save_folder(model, tmp_path / "hub", eqreg_config=EqRegConfig())
    # Exactly what the card tells users to run (local-dir: stands in for hf-hub: offline).
    again = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    x = torch.rand(1, 3, 21, 27)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_folder_permissions_follow_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        folder = save_folder(TinyHubNet(), tmp_path / "hub")
    finally:
        os.umask(umask)
    assert os.stat(folder).st_mode & 0o777 == 0o755


def test_folder_without_eqreg_config_loads_none(tmp_path):
    model = TinyHubNet()
    folder = save_folder(model, tmp_path / "hub")
    assert "eqreg_config.json" not in os.listdir(folder)
    _, cfg = load_folder(folder, model_cls=TinyHubNet)
    assert cfg is None


def test_wrapped_model_is_unwrapped(tmp_path):
    model = TinyHubNet()
    folder = save_folder(nn.DataParallel(model), tmp_path / "hub", eqreg_config=EqRegConfig())
    loaded, _ = load_folder(folder, model_cls=TinyHubNet)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_class_outside_eqreg_hf_is_not_imported(tmp_path):
    folder = save_folder(TinyHubNet(), tmp_path / "hub")
    with pytest.raises(HubFolderError, match="model_cls"):
        load_folder(folder)


def test_unknown_model_and_kind_errors(tmp_path):
    with pytest.raises(TypeError, match="PyTorchModelHubMixin"):
        detect_kind(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match=r"Unknown kind 'onnx'.*'timm'"):
        save_folder(TinyHubNet(), tmp_path / "hub", kind="onnx")
    with pytest.raises(FileNotFoundError, match="save_folder"):
        load_folder(tmp_path / "missing")


class _ExplodingCard:
    def __str__(self):
        raise RuntimeError("card rendering failed")


def _listing(path):
    return sorted(os.listdir(path))


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="card rendering failed"):
        save_folder(TinyHubNet(), tmp_path / "hub", eqreg_config=EqRegConfig(), card=_ExplodingCard())
    assert _listing(tmp_path) == []  # neither the target nor a temp folder


def test_failed_resave_keeps_previous_folder(tmp_path):
    first = TinyHubNet()
    folder = save_folder(first, tmp_path / "hub", eqreg_config=EqRegConfig(weight=0.25))
    before = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
    with pytest.raises(RuntimeError):
        save_folder(TinyHubNet(channels=6), folder, eqreg_config=EqRegConfig(), card=_ExplodingCard())
    after = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
    assert after == before
    assert _listing(tmp_path) == ["hub"]


def test_resave_replaces_own_folder(tmp_path):
    folder = save_folder(TinyHubNet(channels=4), tmp_path / "hub", card="old card")
    save_folder(TinyHubNet(channels=6), folder, eqreg_config=EqRegConfig(weight=0.5))
    loaded, cfg = load_folder(folder, model_cls=TinyHubNet)
    assert loaded.conv1.out_channels == 6 and cfg.weight == 0.5
    assert open(os.path.join(folder, "README.md")).read() != "old card"  # old files gone with the old folder
    assert _listing(tmp_path) == ["hub"]


@pytest.mark.parametrize("overwrite", [True, False])
def test_foreign_folder_is_never_replaced(tmp_path, overwrite):
    target = tmp_path / "run"
    (target / "checkpoint-10").mkdir(parents=True)
    (target / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="run"):
        save_folder(TinyHubNet(), target, overwrite=overwrite)
    assert _listing(target) == ["checkpoint-10", "config.json"]
    assert _listing(tmp_path) == ["run"]


def test_folder_saved_before_the_move_to_tasks_loads(tmp_path):
    """eqreg_model.json written when the networks lived in eqreg_hf.models still names that module."""
    from eqreg_hf.tasks.derain.networks import FastDerainer

    model = FastDerainer(channels=4, num_blocks=1).eval()
    folder = save_folder(model, tmp_path / "hub", eqreg_config=EqRegConfig(weight=1e-2))
    info_path = os.path.join(folder, MODEL_INFO_NAME)
    info = json.load(open(info_path))
    assert info["class"] == "eqreg_hf.tasks.derain.networks:FastDerainer"
    info["class"] = "eqreg_hf.models.derain:FastDerainer"  # as written before the reorganisation
    with open(info_path, "w") as fh:
        json.dump(info, fh)

    loaded, cfg = load_folder(folder)
    assert type(loaded) is FastDerainer and cfg.weight == 1e-2
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    "old, new",
    [
        ("eqreg_hf.models.derain:FastDerainer", "eqreg_hf.tasks.derain.networks:FastDerainer"),
        (
            "eqreg_hf.models.classification:create_classifier",
            "eqreg_hf.tasks.classify.networks:create_classifier",
        ),
    ],
)
def test_moved_class_paths_map_to_their_new_module(old, new):
    from eqreg_hf.hub.model_classes import current_path

    assert current_path(old) == new


def test_moved_registered_class_loads_from_its_new_module():
    from eqreg_hf.hub.model_classes import model_class
    from eqreg_hf.tasks.derain.networks import FastDerainer

    assert model_class("eqreg_hf.models.derain:FastDerainer") is FastDerainer


# Every hub module whose docstrings hold examples that run (the others only show +SKIP'd calls).
DOCTEST_MODULES = [
    "eqreg_hf.hub.arguments",
    "eqreg_hf.hub.card",
    "eqreg_hf.hub.card_facts",
    "eqreg_hf.hub.folder",
    "eqreg_hf.hub.formats",
    "eqreg_hf.hub.model_classes",
    "eqreg_hf.hub.push",
]


def test_every_hub_module_is_doctested_or_only_skips():
    import doctest
    import importlib
    import pkgutil

    import eqreg_hf.hub

    for info in pkgutil.iter_modules(eqreg_hf.hub.__path__, "eqreg_hf.hub."):
        if info.name not in DOCTEST_MODULES:
            result = doctest.testmod(importlib.import_module(info.name))
            assert result.failed == 0 and result.attempted == 0, f"{info.name}: add it to DOCTEST_MODULES"


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.failed == 0 and result.attempted > 0
