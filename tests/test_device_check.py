"""scripts/device_check.sh (issue 14, item 3): the prepared GPU check. Here (no CUDA) it must say so
and exit 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from eqreg_hf.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "device_check.sh")


def test_the_script_is_valid_bash():
    run = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = tmp_path / "check"
    run = subprocess.run(["bash", SCRIPT, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "no CUDA device" in run.stdout and "exiting 0" in run.stdout
    assert not out.exists()  # nothing measured, nothing written


def test_it_fits_in_eight_minutes_and_its_training_flags_parse():
    text = open(SCRIPT, encoding="utf-8").read()
    limits = [int(n) for n in re.findall(r"^step \w+ (\d+) ", text, flags=re.M)]
    assert len(limits) == 4 and sum(limits) <= 8 * 60
    command = re.search(r"train-derain (.*?)--output-dir", text, flags=re.S).group(1)
    argv = [a for a in command.replace("\\\n", " ").split() if a != '"$MP"']
    at = argv.index("--mixed-precision")
    argv[at + 1 : at + 1] = ["bf16"]
    args = build_parser().parse_args(["train-derain", *argv, "--output-dir", "x"])
    assert args.max_steps == 200 and args.report_to == "tensorboard"


def test_the_cuda_tests_are_collected_and_skip_here():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs them for real")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            os.path.join(ROOT, "tests", "test_cuda.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert re.search(r"(\d+) skipped", run.stdout) and "no CUDA device here" in run.stdout
