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


# ------------------------------------------------------------------ cards that say what happened (issue 22)
def _restore_card(task: str, degradation: dict, cfg=None, **kw):
    facts = CardFacts(
        task=task,
        model_name=f"m-{task}",
        metrics={"psnr": 25.0},
        dataset="photos",
        degradation=degradation,
        **kw,
    )
    return make_model_card(facts, eqreg_config=cfg if cfg is not None else CONFIGS[0], kind="mixin")


@pytest.mark.parametrize(
    "task, kept, left_off",
    [
        ("denoise", {"sigma"}, {"mask_ratio", "scale", "sr_filter"}),
        ("inpaint", {"mask_ratio", "sigma"}, {"scale", "sr_filter"}),
        ("sr", {"scale", "sr_filter", "sigma"}, {"mask_ratio"}),
    ],
)
def test_a_card_states_only_its_own_degradation(task, kept, left_off):
    from eqreg_hf.data.restore import Degradation

    card = _restore_card(task, Degradation(task, mask_ratio=0.3, scale=3).to_dict())
    saved = card.data.eqreg["degradation"]
    assert set(saved) == {"task"} | kept and saved["task"] == task
    for field in kept:
        assert f"| `{field}` |" in card.text
    for field in left_off:
        assert f"`{field}`" not in card.text, field
    assert ("noise level" in card.text) == (task == "denoise")  # its own limitation, not the others'
    assert ("masks of one ratio" in card.text) == (task == "inpaint")


def test_a_degradation_of_another_task_is_refused():
    with pytest.raises(ValueError, match=r"task='denoise'.* a 'inpaint' one"):
        _restore_card("denoise", {"task": "inpaint", "mask_ratio": 0.5})


def test_a_derain_card_states_its_rain_and_no_restoration_field():
    from eqreg_hf.data.rain_settings import DEFAULT_RAIN

    card = _card(
        "derain", {"psnr": 30.0}, CONFIGS[0], degradation={"rain": "synthetic", **DEFAULT_RAIN, "sigma": 0.1}
    )
    saved = card.data.eqreg["degradation"]
    assert saved["angle_range"] == [-30.0, 30.0] and "sigma" not in saved  # JSON types: the YAML reads back
    assert "## Rain" in card.text and "synthetic rain streaks" in card.text


def test_a_classes_tags_for_other_tasks_stay_off_the_card(tmp_path):
    from eqreg_hf.tasks.restore.networks import DnCNN

    net = DnCNN(channels=4, depth=3)  # the class declares denoising, inpainting and super-resolution
    for task, own, other in [
        ("denoise", "image-denoising", {"inpainting", "super-resolution"}),
        ("sr", "super-resolution", {"denoising", "inpainting"}),
    ]:
        facts = CardFacts(task=task, metrics={"psnr": 20.0}, dataset="photos")
        folder = write_hub_folder(net, tmp_path / task, facts, eqreg_config=EqRegConfig(weight=0.0))
        tags = set(ModelCard.load(os.path.join(folder, "README.md")).data.tags)
        assert own in tags and "dncnn" in tags and not tags & other, tags


@pytest.mark.parametrize(
    "training, words",
    [({"final_eqreg_weight": 0.0123}, "settled on λ = 0.0123"), ({}, "the final λ was not recorded")],
)
def test_an_auto_card_states_the_weight_it_settled_on(training, words):
    cfg = EqRegConfig(weight="auto", target_share=0.05)
    facts = CardFacts(task="derain", model_name="m", metrics={"psnr": 30.0}, dataset="x", training=training)
    assert (
        f"| Weight λ (`weight`) | `auto (share 0.05), {words}` |"
        in make_model_card(facts, eqreg_config=cfg).text
    )


def test_the_equivariance_error_is_named_under_the_configs_own_group():
    facts = CardFacts(task="derain", model_name="m", metrics={"equivariance_error": 0.1}, dataset="x")
    card = make_model_card(facts, eqreg_config=EqRegConfig(group="D4", weight=0.1))
    assert card.data.eval_results[0].metric_name == "Equivariance error (D4, relative)"
    assert card.data.eqreg == {"task": "derain", "equivariance_group": "D4"}
    assert "nothing is implied for other angles or scale" in card.text  # D4 had the reflections


GENERATED = [
    # (task, its degradation settings, other train-restore settings)
    ("denoise", {"sigma": 0.05}, {}),
    ("inpaint", {"mask_ratio": 0.2}, {}),
    ("sr", {"scale": 3}, {"crop_size": 24}),
    ("sr", {"scale": 2}, {"model": "swin2sr", "crop_size": 16}),  # the Trainer path
]


@pytest.mark.parametrize(
    "task, degradation, other", GENERATED, ids=["denoise", "inpaint", "sr", "sr-swin2sr"]
)
def test_generated_restore_cards_read_back(tmp_path, task, degradation, other):
    """train-restore's own folders (the loop and the Trainer path): the card's eqreg block and what the demo
    reads (``saved_task``) hold the run's degradation; an auto run's card states its λ; a push uploads it."""
    from eqreg_hf.hub.card_facts import saved_task
    from eqreg_hf.hub.validate import hub_folder_files
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer

    args = RestoreTrainingArguments(
        task=task,
        quick=True,
        progress=False,
        max_steps=2,
        output_dir=str(tmp_path / task),
        **degradation,
        **other,
    )
    cfg = EqRegConfig(layers="auto", group="D4", weight="auto", distance="mse")
    result = train_restorer(args, cfg)
    saved = saved_task(result.output_dir)
    assert saved["task"] == task and saved["equivariance_group"] == "D4"
    assert {k: saved["degradation"][k] for k in degradation} == degradation
    text = (tmp_path / task / "README.md").read_text()
    assert f"settled on λ = {result.metrics['final_eqreg_weight']:.4g}" in text
    assert "(D4, relative)" in text and "(C4, relative)" not in text
    assert "README.md" in hub_folder_files(result.output_dir)  # `eqreg-hf push` uploads this very card


@pytest.mark.slow
def test_train_classifier_d4_auto_measures_and_writes_the_card_under_d4(tmp_path):
    """`train-classifier --eqreg.group D4 --eqreg.weight auto`: results, card and metadata all say D4, and
    the card states the λ the run settled on."""
    from eqreg_hf.cli import main
    from eqreg_hf.hub.card_facts import saved_task

    out = tmp_path / "run"
    argv = ["train-classifier", "--model", "test_resnet", "--dataset", "shapes", "--no-pretrained"]
    argv += ["--eqreg.group", "D4", "--eqreg.weight", "auto", "--train-samples", "16", "--eval-samples", "8"]
    argv += ["--max-steps", "2", "--batch-size", "8", "--equiv-eval-batches", "1", "--no-progress"]
    assert main([*argv, "--logging-steps", "1", "--output-dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["eval_group"] == "D4" and results["eqreg"]["group"] == "D4"
    card = ModelCard.load(out / "model" / "README.md")
    assert [r.metric_name for r in card.data.eval_results if r.metric_type == "equivariance_error"] == [
        "Equivariance error (D4, relative)"
    ]
    assert saved_task(out / "model")["equivariance_group"] == "D4"
    assert f"settled on λ = {results['metrics']['final_eqreg_weight']:.4g}" in card.text


BASELINES = [
    ["train-restore", "--task", "denoise", "--quick", "--max-steps", "2"],
    ["train-derain", "--eqreg.weight", "0", "--channels", "8", "--num-blocks", "1", "--synthetic-size", "32"]
    + [
        "--crop-size",
        "16",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--eval-max-images",
        "1",
        "--equiv-images",
        "1",
    ],
]


@pytest.mark.parametrize("argv", BASELINES, ids=["train-restore", "train-derain"])
def test_a_baseline_is_measured_under_the_group_its_flags_name(tmp_path, argv):
    """`--eqreg.group D4` without an EQ-Reg weight: the run, its card and its metadata say D4, not C4."""
    from eqreg_hf.cli import main
    from eqreg_hf.hub.card_facts import saved_task

    out = tmp_path / "baseline"
    assert main([*argv, "--eqreg.group", "D4", "--no-progress", "--output-dir", str(out)]) == 0
    card = ModelCard.load(out / "README.md")
    assert "Equivariance error (D4, relative)" in [r.metric_name for r in card.data.eval_results]
    assert saved_task(out)["equivariance_group"] == "D4" and "without the EQ-Reg term" in card.text
