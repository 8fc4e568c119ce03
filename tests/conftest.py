import pathlib
import sys

import pytest
import torch

# tests/nets.py holds the tiny networks shared by the core tests
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a 2-core machine: intra-op threads only add contention (up to 10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
