"""The web demo (issue 14, item 2): what it computes, the commands, the Space export, and the app in a
real browser.

The browser test serves ``eqreg-hf app`` on a local port with a tiny saved derainer and drives Debian's
Chromium (/usr/bin/chromium, ``apt-get install -y chromium``; .ci/run installs it where it is missing)
through Playwright: upload an image, run, check the restored image, the consistency view, the PSNR and one
bar per tap. Screenshots go to the test's temp folder; ``EQREG_UPDATE_SCREENSHOT=1`` also copies one to
docs/app_screenshot.png.
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
    from eqreg_hf import EqRegConfig
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


def test_restore_rotation_consistency_and_layer_errors(model_folder):
    from eqreg_hf.app.restore import (
        bar_chart_html,
        example_image,
        layer_errors,
        load_app_model,
        restore_image,
        rotation_consistency,
    )

    app = load_app_model(model_folder)
    assert app.restorer and app.group_order == 2 and app.taps == ["body.0.conv1", "body.0.conv2"]
    image = example_image()
    out = restore_image(app, image, "rain streaks")
    assert out["input"].shape == out["restored"].shape == out["clean"].shape
    assert (
        out["psnr_restored"] > out["psnr_input"] - 3
    )  # a few steps of training: not worse than the rain by much
    view = rotation_consistency(app, image, k=2)
    assert view["difference"].shape == out["clean"].shape and 0 < view["relative_error"] < 1
    assert restore_image(app, image, "none (the image is already degraded)")["psnr_input"] is None
    errors = layer_errors(app, image)
    assert list(errors) == app.taps and all(v >= 0 for v in errors.values())
    assert bar_chart_html(errors).count('class="eq-bar"') == 2


class _Identity(torch.nn.Module):
    def eqreg_layers(self, t):
        return ["conv"]

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        self.conv(x)
        return x


def test_an_exactly_consistent_restorer_reads_zero():
    from eqreg_hf.app.restore import AppModel, example_image, rotation_consistency

    app = AppModel(model=_Identity().eval(), name="identity", taps=["conv"], group_order=4, restorer=True)
    view = rotation_consistency(app, example_image(), k=1)
    assert view["relative_error"] == 0.0 and view["max_abs"] == 0.0 and not view["difference"].any()


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


@pytest.mark.skipif(_browser_ready() is not None, reason=str(_browser_ready()))
def test_web_demo_in_a_real_browser(tmp_path, model_folder):
    from playwright.sync_api import sync_playwright

    from eqreg_hf.app.restore import example_image

    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(example_image()).save(photo)
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "eqreg_hf", "app", model_folder, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
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
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#upload input[type=file]").set_input_files(str(photo))
            page.locator("#upload img").first.wait_for(timeout=30_000)
            page.locator("#run").click()
            page.wait_for_function(
                "() => { const t = document.querySelector('#psnr-restored textarea, #psnr-restored input');"
                " return t && /^-?\\d+(\\.\\d+)?$/.test(t.value.trim()); }",
                timeout=45_000,
            )
            for element in (
                "#restored-image img",
                "#input-image img",
                "#turned-image img",
                "#difference-image img",
            ):
                page.locator(element).first.wait_for(timeout=15_000)
            psnr = page.locator("#psnr-restored textarea, #psnr-restored input").first.input_value()
            assert re.fullmatch(r"-?\d+(\.\d+)?", psnr.strip()) and 5 < float(psnr) < 60
            assert "relative difference" in page.locator("#consistency").inner_text()
            bars = page.locator("#layer-bars .eq-bar")
            assert bars.count() == 2
            assert sorted(bars.nth(i).get_attribute("data-tap") for i in range(2)) == [
                "body.0.conv1",
                "body.0.conv2",
            ]
            shot = tmp_path / "app_screenshot.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
        assert shot.stat().st_size > 10_000
        if os.environ.get("EQREG_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, os.path.join(ROOT, "docs", "app_screenshot.png"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
