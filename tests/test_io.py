import os

import pytest

from eqreg_hf.core.io import atomic_write_text, save_figure


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b.json", "{}\n")
    assert open(path).read() == "{}\n" and os.listdir(tmp_path / "a") == ["b.json"]


def test_failed_figure_save_keeps_the_old_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    fig = plt.figure()
    with pytest.raises(TypeError):
        save_figure(fig, target, no_such_option=1)
    assert target.read_bytes() == b"old" and not plt.get_fignums()
    assert save_figure(plt.figure(), target) == str(target) and target.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["plot.png"]
