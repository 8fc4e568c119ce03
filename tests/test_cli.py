import pytest

from eqreg_hf.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("demo", "train-derain", "train-classifier", "measure", "push"):
        assert cmd in out


def test_bad_input_is_one_line_not_a_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("EQREG_DATA_DIR", raising=False)
    monkeypatch.delenv("EQREG_DEBUG", raising=False)
    code = main(
        ["train-derain", "--dataset", "Rain100L", "--max-steps", "1", "--output-dir", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("eqreg-hf train-derain: error:") and "Rain100L" in err and "EQREG_DATA_DIR" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_debug_env_shows_the_exception(monkeypatch, tmp_path):
    monkeypatch.delenv("EQREG_DATA_DIR", raising=False)
    monkeypatch.setenv("EQREG_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(
            [
                "train-derain",
                "--dataset",
                "Rain100L",
                "--max-steps",
                "1",
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )


@pytest.mark.parametrize("module", ["eqreg_hf", "eqreg_hf.cli"])
def test_python_dash_m_runs_the_command(module):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "train-derain" in out.stdout
