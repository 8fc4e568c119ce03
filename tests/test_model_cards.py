"""Model cards: templates render, ModelCard.load parses them, model-index reads back the metrics."""

from __future__ import annotations

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.hub import CardFacts, load_folder, make_model_card, validate_hub_folder, write_hub_folder
from eqreg_hf.hub.card import TASKS, group_name

# (task, metrics as a training command passes them, what model-index must hold: {type: value})
CASES = [
    (
        "derain",
        {"psnr": 31.4172, "ssim": 0.93125, "equivariance_error": 0.0423},
        {"psnr": 31.4172, "ssim": 0.93125, "equivariance_error": 0.0423},
    ),
    ("derain", {"eval_psnr": 27.5, "eval_runtime": 1.5, "epoch": 3.0}, {"psnr": 27.5}),
    (
        "classification",
        {"eval_accuracy": 0.6875, "equivariance_error": 1.25e-7, "eval_samples_per_second": 9.0},
        {"accuracy": 0.6875, "equivariance_error": 1.25e-7},
    ),
    (
        "classification",
        {"accuracy": torch.tensor(0.5), "top5_accuracy": 0.875, "eval_loss": 1.9},
        {"accuracy": 0.5, "top5_accuracy": 0.875, "loss": 1.9},
    ),
]
DATASETS = {
    "derain": {"name": "Rain100L", "split": "test", "train_split": "train"},
    "classification": {"name": "CIFAR-100", "id": "uoft-cs/cifar100", "split": "test", "config": "cifar100"},
}
CONFIGS = [
    EqRegConfig(layers=["body.0.conv1", "body.0.conv2"], group_order=4, weight=1e-2, distance="relative"),
    EqRegConfig(
        layers="layer*.0.conv1",
        group_order=8,
        weight=3e-6,
        distance="fro",
        include_identity=True,
        layer_weights={"layer1.*": 2.0},
        rotated_fraction=0.5,
        seed=11,
    ),
]


def _card(task, metrics, cfg, kind=None, **kw):
    training = {"epochs": 3, "learning_rate": 2e-4, "batch_size": 4}
    facts = CardFacts(
        task=task, model_name=f"tiny-{task}", metrics=metrics, dataset=DATASETS[task], training=training, **kw
    )
    return make_model_card(facts, eqreg_config=cfg, kind=kind)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["c4-relative", "c8-fro"])
@pytest.mark.parametrize("task,metrics,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_card_parses_and_metadata_reads_back(tmp_path, task, metrics, expected, cfg):
    path = tmp_path / "README.md"
    _card(task, metrics, cfg, kind="timm" if task == "classification" else "mixin").save(path)

    card = ModelCard.load(path, ignore_metadata_errors=False)
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == TASKS[task][1]
    assert "eqreg" in meta["tags"]
    # model-index is present and parses into the values that were passed in
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == f"tiny-{task}"
    assert {r.metric_type: r.metric_value for r in results} == pytest.approx(expected, rel=1e-6)
    assert [r.metric_type for r in results] == list(expected)  # order kept
    for r in results:
        assert r.dataset_name == DATASETS[task]["name"]
        assert r.dataset_split == "test"
        assert r.task_type == TASKS[task][1]
    assert card.data.eval_results[0].metric_value == results[0].metric_value
    # the metadata is a valid ModelCardData (raises on a broken model-index)
    ModelCardData(**meta, ignore_metadata_errors=False)

    text = card.text
    for key, value in cfg.to_dict().items():
        assert f"(`{key}`)" in text, key
        if value is not None:
            shown = value if isinstance(value, str) else json.dumps(value)
            assert f"`{shown}`" in text, (key, shown)
    assert f"C{cfg.group_order}" in text
    assert "2505.19799" in text and "Bai, Yulu and Fu, Jiahong and Xie, Qi and Meng, Deyu" in text
    for phrase in (
        "Soft, not strict",
        "λ is not portable",
        "Grid misalignment",
        "Intended use",
        "`learning_rate`",
    ):
        assert phrase in text, phrase


def test_dataset_id_goes_to_metadata():
    card = _card("classification", {"accuracy": 0.5}, CONFIGS[0], base_model="timm/resnet18.a1_in1k")
    assert card.data.datasets == ["uoft-cs/cifar100"]
    assert card.data.base_model == "timm/resnet18.a1_in1k"
    assert card.data.eval_results[0].dataset_type == "uoft-cs/cifar100"
    assert card.data.eval_results[0].dataset_config == "cifar100"
    card = _card("derain", {"psnr": 30.0}, CONFIGS[0])
    assert card.data.datasets is None and card.data.eval_results[0].dataset_type == "rain100l"
    card = make_model_card(
        CardFacts(
            task="derain",
            model_name="m",
            metrics={"psnr": 30.0},
            dataset={"name": "synthetic rain (built-in)"},
        ),
        eqreg_config=None,
    )
    assert card.data.eval_results[0].dataset_type == "synthetic-rain-built-in"
    assert card.data.eval_results[0].dataset_name == "synthetic rain (built-in)"


@pytest.mark.parametrize(
    "cfg",
    [None, EqRegConfig(weight=0.0), EqRegConfig(group_order=1)],
    ids=["no-config", "weight-0", "order-1"],
)
def test_baseline_card_says_eqreg_was_off(cfg):
    text = _card("derain", {"psnr": 25.0}, cfg).text
    assert "without the EQ-Reg term" in text
    assert "During training, every batch" not in text
    if cfg is None:
        assert "No EQ-Reg configuration was used" in text


def test_description_is_added_below_the_summary():
    text = _card("derain", {"psnr": 30.0}, CONFIGS[0], description="PSNR on the Y channel.").text
    assert "trained with **EQ-Reg**" in text
    assert (
        text.index("trained with **EQ-Reg**")
        < text.index("PSNR on the Y channel.")
        < text.index("## Results")
    )


def test_per_layer_table_and_snippets():
    card = _card(
        "classification",
        {"accuracy": 0.5},
        CONFIGS[0],
        kind="timm",
        repo_id="me/cls",
        equivariance_report={"layer1.0.conv1": 0.0312, "layer2.0.conv1": 0.25},
    )
    assert "| `layer1.0.conv1` | 0.0312 |" in card.text
    assert 'timm.create_model("hf-hub:me/cls", pretrained=True)' in card.text
    assert card.data.library_name == "timm"


@pytest.mark.parametrize("t,needle", [(1, "off"), (2, "180°"), (4, "90°"), (8, "45°; interpolated")])
def test_group_name(t, needle):
    assert needle in group_name(t)


BAD = [
    (dict(task="segmentation"), ValueError, r"Unknown task 'segmentation'.*'derain'"),
    (dict(metrics={}), ValueError, "non-empty dict"),
    (dict(metrics={"psnr": "high"}), ValueError, r"Metric 'psnr' = 'high'"),
    (dict(metrics={"psnr": float("nan")}), ValueError, "finite"),
    (dict(dataset={"split": "test"}), ValueError, "at least 'name'"),
    (dict(dataset={"name": "x", "splits": "test"}), ValueError, r"Unknown dataset keys \['splits'\]"),
    (dict(kind="onnx"), ValueError, "Unknown kind 'onnx'"),
    (dict(eqreg_config={"weight": -1}), ValueError, "weight"),
    (dict(model_name=None), ValueError, r"CardFacts\(model_name=None\): name the model"),
]


@pytest.mark.parametrize("override,err,match", BAD, ids=[str(list(b[0].values())[0])[:20] for b in BAD])
def test_bad_input_is_named(override, err, match):
    kwargs = dict(
        task="derain",
        model_name="m",
        metrics={"psnr": 30.0},
        dataset={"name": "Rain100L"},
        eqreg_config=EqRegConfig(),
    )
    kwargs.update(override)
    options = {k: kwargs.pop(k) for k in ("eqreg_config", "kind") if k in kwargs}
    with pytest.raises(err, match=match):
        make_model_card(CardFacts(**kwargs), **options)


def test_write_hub_folder_end_to_end(tmp_path):
    from eqreg_hf.tasks.derain.networks import FastDerainer

    net = FastDerainer(channels=4, num_blocks=1).eval()
    cfg = EqRegConfig(layers=net.eqreg_layers(4), weight=1e-2)
    facts = CardFacts(
        task="derain",
        metrics={"eval_psnr": 29.25, "eval_ssim": 0.875, "equivariance_error": 0.125},
        dataset="Rain100L",
        training={"epochs": 1},
    )
    folder = write_hub_folder(net, tmp_path / "tiny-derain", facts, eqreg_config=cfg)
    assert facts.model_name is None  # the caller's facts are not changed
    files = validate_hub_folder(folder)
    assert {"README.md", "config.json", "model.safetensors", "eqreg_config.json"} <= set(files)
    card = ModelCard.load(os.path.join(folder, "README.md"))
    assert (
        card.data.model_name == "fastderainer-rain100l-eqreg"
    )  # from the model and the task, not the folder
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "psnr": 29.25,
        "ssim": 0.875,
        "equivariance_error": 0.125,
    }
    assert "FastDerainer" in card.text and "body.0.conv1" in card.text
    assert card.data.library_name == "eqreg-hf"  # declared by FastDerainer's PyTorchModelHubMixin
    assert {"deraining", "eqreg", "model_hub_mixin"} <= set(card.data.tags)
    loaded, cfg2 = load_folder(folder)
    assert cfg2 == cfg
    x = torch.rand(1, 3, 11, 15)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
