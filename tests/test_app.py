"""The web demo (issue 14, item 2; issue 22): what it computes, the commands, the Space export, and the app
in a real browser.

Every task the demo serves is saved by its own recipe (a tiny derainer; one restorer per train-restore task,
each with a degradation that is not the default) and served with the folder's own degradation, group and
taps. The browser test serves ``eqreg-hf app`` on a local port, for the derainer and for the super-resolution
model, and drives Debian's Chromium (/usr/bin/chromium, ``apt-get install -y chromium``; .ci/run installs it
where it is missing) through Playwright: upload an image, run, check the images' sizes, the summary, the
consistency view, the PSNR and one bar per tap. Screenshots go to the test's temp folder;
``EQREG_UPDATE_SCREENSHOT=1`` also copies the derainer's to docs/app_screenshot.png.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from huggingface_hub import ModelCard

from eqreg_hf import EqRegConfig
from eqreg_hf.cli import main

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A tiny derainer, trained a few steps on the built-in rain, saved as a Hub folder (C2 EQ-Reg,
    2 taps)."""
    from eqreg_hf.tasks.derain.recipe import DerainTrainingArguments, train_derainer

    out = tmp_path_factory.mktemp("app") / "tiny-derainer"
    args = DerainTrainingArguments(
        channels=8,
        num_blocks=1,
        synthetic_size=48,
        crop_size=24,
        batch_size=4,
        max_steps=30,
        learning_rate=3e-3,
        equiv_images=1,
        eval_max_images=1,
        progress=False,
        output_dir=str(out),
    )
    train_derainer(args, EqRegConfig(layers="auto", group_order=2, weight=1e-3, distance="relative"))
    return str(out)


RESTORE_RUNS = {
    # name -> (train-restore settings: the task and its own degradation, EQ-Reg)
    "denoise": ({"sigma": 0.2}, EqRegConfig(layers="auto", group="D4", weight="auto", distance="mse")),
    "inpaint": ({"mask_ratio": 0.3}, None),
    "sr": ({"scale": 2, "train_size": "region16"}, EqRegConfig(layers="auto", group="C4", weight=1e-3)),
    # transformers' Swin2SR through the Trainer: its input sides must be multiples of its window
    "sr-swin2sr": (
        {"scale": 2, "model": "swin2sr", "crop_size": 16},
        EqRegConfig(layers="auto", weight="auto"),
    ),
}


@pytest.fixture(scope="module")
def restore_folders(tmp_path_factory):
    """One tiny restorer per train-restore task (and Swin2SR), trained 2 steps and saved by the recipe's own
    save (``save_restorer``), each with a degradation that is not the library's default."""
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer

    root = tmp_path_factory.mktemp("restore")
    folders = {}
    for name, (settings, cfg) in RESTORE_RUNS.items():
        settings = {"task": name.split("-")[0], **settings}
        args = RestoreTrainingArguments(
            quick=True, progress=False, max_steps=2, output_dir=str(root / name), **settings
        )
        folders[name] = train_restorer(args, cfg).output_dir
    return folders


def test_derainer_restores_with_its_own_rain(model_folder):
    from eqreg_hf.app.restore import (
        _fit,
        bar_chart_html,
        example_image,
        layer_errors,
        load_app_model,
        restore_image,
        rotation_consistency,
    )
    from eqreg_hf.data.rain_settings import DEFAULT_RAIN
    from eqreg_hf.data.synthetic import add_rain

    app = load_app_model(model_folder)
    assert app.restorer and app.task == "derain" and app.group == "C2"
    assert app.taps == ["body.0.conv1", "body.0.conv2"]
    assert app.settings == {"rain": "synthetic", **DEFAULT_RAIN}  # read back from the card
    image = example_image()
    out = restore_image(app, image)
    clean = _fit(image)
    assert (out["input"] == add_rain(clean, seed=0)).all()  # the training rain model, its settings
    assert out["input"].shape == out["restored"].shape == out["clean"].shape
    assert out["psnr_restored"] > out["psnr_input"] - 3  # a few steps of training: not worse than the rain
    view = rotation_consistency(app, image, 2)
    assert view["difference"].shape == out["clean"].shape and 0 < view["relative_error"] < 1
    assert restore_image(app, image, degraded=True)["psnr_input"] is None
    errors = layer_errors(app, image)
    assert list(errors) == app.taps and all(v >= 0 for v in errors.values())
    assert bar_chart_html(errors).count('class="eq-bar"') == 2


@pytest.mark.parametrize("name", list(RESTORE_RUNS))
def test_each_restore_task_is_served_with_its_own_degradation(restore_folders, name):
    """σ, mask ratio and scale come from the saved folder, not from a default of the demo."""
    from eqreg_hf.app.restore import example_image, layer_errors, load_app_model, restore_image

    app, task = load_app_model(restore_folders[name]), name.split("-")[0]
    assert app.task == task and app.restorer
    out = restore_image(app, example_image(), seed=3)
    clean, noisy = out["clean"], out["input"]
    assert out["restored"].shape == clean.shape
    if task == "denoise":
        assert app.settings["sigma"] == 0.2
        assert 0.15 < float((noisy - clean).std()) < 0.21  # σ = 0.2, a little less where [0, 1] clips
    elif task == "inpaint":
        assert app.settings["mask_ratio"] == 0.3
        assert 0.27 < float((noisy == 0).all(axis=2).mean()) < 0.33  # 30 % of the pixels missing
    else:
        assert app.settings["scale"] == 2
        assert noisy.shape == (clean.shape[0] // 2, clean.shape[1] // 2, 3)  # the low-resolution input
        assert out["psnr_input"] > 20  # against the bicubic upsampling, as the card's degraded_psnr
        upscaled = restore_image(app, noisy, degraded=True)
        assert upscaled["restored"].shape == (noisy.shape[0] * 2, noisy.shape[1] * 2, 3)
        assert noisy.shape[0] % app.input_multiple == noisy.shape[1] % app.input_multiple == 0
    assert list(layer_errors(app, noisy)) == app.taps  # on the model's own input


def test_a_d4_model_is_measured_and_mirrored_under_d4(restore_folders, monkeypatch):
    import eqreg_hf.core.measure as measure
    from eqreg_hf.app.restore import consistency_elements, example_image, layer_errors, load_app_model

    app = load_app_model(restore_folders["denoise"])
    assert app.group == "D4" and app.taps == app.model.eqreg_layers(8)  # the D4 field size, 8 channels
    assert {"mirror", "mirror, then 90°"} <= set(consistency_elements(app))
    groups = []
    real = measure.equivariance_error
    monkeypatch.setattr(
        measure, "equivariance_error", lambda *a, **k: groups.append(real(*a, **k).group) or real(*a, **k)
    )
    assert list(layer_errors(app, example_image())) == app.taps and groups == ["D4"]
    assert consistency_elements(load_app_model(restore_folders["sr"])) == {
        "90°": (0, 1),
        "180°": (0, 2),
        "270°": (0, 3),
    }


def test_a_strictly_d4_equivariant_restorer_reads_zero_for_every_element(tmp_path):
    from eqreg_hf.app.restore import consistency_elements, example_image, load_app_model, rotation_consistency
    from eqreg_hf.hub import CardFacts, write_hub_folder
    from eqreg_hf.tasks.restore.networks import StrictRestorer

    torch.manual_seed(0)
    facts = CardFacts(
        task="denoise",
        metrics={"psnr": 20.0},
        dataset="photos",
        degradation={"task": "denoise", "sigma": 0.1},
        equivariance_group="D4",
    )
    net = StrictRestorer("D4", num_fields=1, depth=3)
    folder = write_hub_folder(net, tmp_path / "strict", facts, eqreg_config=EqRegConfig(weight=0.0))
    app = load_app_model(folder)  # a baseline: the group its card was measured under
    assert app.group == "D4" and len(consistency_elements(app)) == 7
    for g in consistency_elements(app).values():
        assert rotation_consistency(app, example_image(), g)["relative_error"] < 1e-5, g


def test_an_exactly_consistent_restorer_reads_zero():
    from eqreg_hf.app.restore import AppModel, example_image, rotation_consistency

    app = AppModel(model=_Identity().eval(), name="identity", taps=["conv"], group="C4", task="denoise")
    view = rotation_consistency(app, example_image(), 1)
    assert view["relative_error"] == 0.0 and view["max_abs"] == 0.0 and not view["difference"].any()


def _strip_eqreg_block(folder) -> None:
    """The card as written before it carried the ``eqreg`` metadata block."""
    card = ModelCard.load(os.path.join(folder, "README.md"))
    del card.data.eqreg
    card.save(os.path.join(folder, "README.md"))


def test_an_older_folder_gives_its_task_and_degradation_too(restore_folders, tmp_path):
    from eqreg_hf.app.restore import load_app_model

    old = shutil.copytree(restore_folders["inpaint"], tmp_path / "old")
    _strip_eqreg_block(old)
    assert "eqreg:" not in (old / "README.md").read_text()
    app = load_app_model(str(old))  # task from model-index, mask ratio from training_log.json
    assert app.task == "inpaint" and app.settings["mask_ratio"] == 0.3


REFUSED = [
    # (change to a saved denoise folder, words of the one-line refusal)
    ("no-degradation", ["'denoise' model", "does not record sigma"]),
    ("unknown-task", ["names the task 'mar'", "['classification', 'denoise', 'derain', 'inpaint', 'sr']"]),
    ("no-task", ["does not name its task"]),
]


def _break(folder, how: str) -> None:
    card_path = os.path.join(folder, "README.md")
    card = ModelCard.load(card_path)
    if how == "no-degradation":
        card.data.eqreg = {"task": "denoise"}
        os.remove(os.path.join(folder, "training_log.json"))
    elif how == "unknown-task":
        card.data.eqreg = {"task": "mar"}
    else:
        del card.data.eqreg
        card.data.eval_results = None  # no model-index either: nothing names the task
    card.save(card_path)


@pytest.mark.parametrize("how, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_folder_the_demo_cannot_serve_is_refused_in_one_line(restore_folders, tmp_path, capsys, how, words):
    from eqreg_hf.app.restore import load_app_model

    folder = shutil.copytree(restore_folders["denoise"], tmp_path / "model")
    _break(str(folder), how)
    with pytest.raises(ValueError) as info:
        load_app_model(str(folder))
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words), str(info.value)
    # eqreg-hf space refuses it before writing anything; eqreg-hf app before serving
    assert main(["space", str(folder), str(tmp_path / "space")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot serve" in err and words[0] in err, err
    assert not (tmp_path / "space").exists()
    assert main(["app", str(folder), "--port", "7"]) == 2
    assert words[0] in capsys.readouterr().err


def test_errors_reach_the_page_as_one_line(restore_folders):
    gr = pytest.importorskip("gradio")  # the [app] extra
    from eqreg_hf.app.restore import AppModel
    from eqreg_hf.app.ui import _handler, build_app

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied\n(a long traceback follows)")

    app = AppModel(Broken(), "broken", [], "C4", "denoise", {"task": "denoise", "sigma": 0.1})
    with pytest.raises(gr.Error) as info:
        _handler(app)(None, "as in training", "90°")
    assert (
        info.value.message
        == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (a long traceback follows)"
    )
    demo = build_app(restore_folders["sr"])
    assert demo.title == "EQ-Reg demo: sr"


class _Identity(torch.nn.Module):
    def eqreg_layers(self, t):
        return ["conv"]

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        self.conv(x)
        return x


@pytest.mark.parametrize(
    "argv, match",
    [
        (["app", "no/such/thing/here"], "neither a model folder nor a Hub id"),
        (["app"], "run `eqreg-hf demo` first"),
        (["app", "--port", "0", "x"], "--port 0"),
        (["space", "no-such-folder", "out"], "No folder"),
    ],
)
def test_app_and_space_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_space_folder_runs_as_a_space(tmp_path, model_folder):
    import yaml

    space = tmp_path / "space"
    assert main(["space", model_folder, str(space), "--model-id", "me/tiny-derainer"]) == 0
    for name in (
        "README.md",
        "app.py",
        "requirements.txt",
        "model/model.safetensors",
        "model/eqreg_config.json",
        "eqreg_hf/app/ui.py",
    ):
        assert (space / name).is_file(), name
    header = yaml.safe_load((space / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert (
        header["sdk"] == "gradio"
        and header["app_file"] == "app.py"
        and header["models"] == ["me/tiny-derainer"]
    )
    requirements = (space / "requirements.txt").read_text().split()
    assert any(r.startswith("gradio") for r in requirements) and any(
        r.startswith("torch") for r in requirements
    )
    # the Space's app.py builds the demo from the vendored package and ./model (launch stubbed)
    code = (
        "import sys; sys.path.insert(0, '.'); import eqreg_hf.app.ui as ui; "
        "ui.launch_app = lambda source, **kw: print('APP', ui.build_app(source).title); "
        "exec(open('app.py').read())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=space,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "APP EQ-Reg demo: model" in run.stdout
    assert main(["space", model_folder, str(space)]) == 2  # never into a folder that holds files


def test_space_push_one_commit(tmp_path, model_folder, monkeypatch, capsys):
    import types

    import huggingface_hub
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append(("create_repo", a, k)))
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, *a, **k: (
            calls.append(("create_commit", a, k))
            or types.SimpleNamespace(commit_url="https://huggingface.co/spaces/me/demo/commit/1")
        ),
    )
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    space = tmp_path / "space"
    assert main(["space", model_folder, str(space), "--push", "me/demo", "--private"]) == 0
    assert [c[0] for c in calls] == ["create_repo", "create_commit"]
    assert (
        calls[0][2]["repo_type"] == "space"
        and calls[0][2]["space_sdk"] == "gradio"
        and calls[0][2]["private"]
    )
    paths = {op.path_in_repo for op in calls[1][2]["operations"]}
    assert {"app.py", "README.md", "requirements.txt", "model/model.safetensors"} <= paths
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "none"))
    assert main(["space", model_folder, str(tmp_path / "other"), "--push", "me/demo"]) == 1
    assert not (tmp_path / "other").exists()  # checked before anything was written


# ---------------------------------------------------------------------------- the app in a real browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser_ready() -> str | None:
    """Why the browser test cannot run here, or None."""
    import importlib.util

    for package in ("gradio", "playwright"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed: pip install -e '.[dev]'"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"Chromium is not installed at {CHROMIUM} "
            "(apt-get install -y chromium; .ci/run does it where it can)"
        )
    return None


def _natural_width(page, element: str) -> int:
    page.locator(f"{element} img").first.wait_for(timeout=15_000)
    return int(page.locator(f"{element} img").first.evaluate("img => img.naturalWidth"))


def _drive(page, url: str, photo, shot) -> dict:
    """Upload the photo, run, wait for the PSNR; return what the page shows."""
    page.goto(url, wait_until="domcontentloaded")
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    page.locator("#upload img").first.wait_for(timeout=30_000)
    page.locator("#run").click()
    page.wait_for_function(
        "() => { const t = document.querySelector('#psnr-restored textarea, #psnr-restored input');"
        " return t && /^-?\\d+(\\.\\d+)?$/.test(t.value.trim()); }",
        timeout=45_000,
    )
    widths = {e: _natural_width(page, e) for e in ("#input-image", "#restored-image", "#clean-image")}
    for element in ("#turned-image img", "#difference-image img"):
        page.locator(element).first.wait_for(timeout=15_000)
    bars = page.locator("#layer-bars .eq-bar")
    page.screenshot(path=str(shot), full_page=True)
    return {
        "psnr": page.locator("#psnr-restored textarea, #psnr-restored input").first.input_value(),
        "summary": page.locator("#summary").inner_text(),
        "consistency": page.locator("#consistency").inner_text(),
        "chart": page.locator("#layer-bars").inner_text(),
        "taps": sorted(bars.nth(i).get_attribute("data-tap") for i in range(bars.count())),
        "widths": widths,
    }


# (the model, words of its summary line, the width of the input against the clean image's)
BROWSER_CASES = [("derain", "synthetic rain streaks, drawn as in training", 1), ("sr", "×2 downsampling", 2)]


@pytest.mark.skipif(_browser_ready() is not None, reason=str(_browser_ready()))
@pytest.mark.parametrize("task, summary, shrink", BROWSER_CASES, ids=[c[0] for c in BROWSER_CASES])
def test_web_demo_in_a_real_browser(tmp_path, model_folder, restore_folders, task, summary, shrink):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from eqreg_hf.app.restore import example_image, load_app_model

    folder = model_folder if task == "derain" else restore_folders[task]
    app = load_app_model(folder)
    photo = tmp_path / "photo.png"
    Image.fromarray(example_image()).save(photo)
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "eqreg_hf", "app", folder, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    shot = tmp_path / "app_screenshot.png"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    why = server.stdout.read()[-2000:] if server.poll() is not None else "timeout"
                    pytest.fail(f"the app did not start: {why}")
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            shown = _drive(browser.new_page(viewport={"width": 1200, "height": 800}), url, photo, shot)
            browser.close()
        assert re.fullmatch(r"-?\d+(\.\d+)?", shown["psnr"].strip()) and 5 < float(shown["psnr"]) < 60
        assert (
            summary in shown["summary"] and f"{task}," in shown["summary"] and app.group in shown["summary"]
        )
        assert "relative difference" in shown["consistency"] and f"({app.group})" in shown["chart"]
        assert shown["taps"] == sorted(app.taps)
        widths = shown["widths"]
        assert widths["#restored-image"] == widths["#clean-image"] == shrink * widths["#input-image"], widths
        assert shot.stat().st_size > 10_000
        if task == "derain" and os.environ.get("EQREG_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, os.path.join(ROOT, "docs", "app_screenshot.png"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
