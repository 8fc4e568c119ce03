"""Docstring examples of the public core are run."""

import doctest
import importlib

import pytest

MODULES = ["eqreg_hf.config", "eqreg_hf.groups", "eqreg_hf.taps", "eqreg_hf.regularizer", "eqreg_hf.measure",
           "eqreg_hf.commands._flags"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": importlib.import_module("torch"),
                                                 "nn": importlib.import_module("torch.nn")})
    assert result.failed == 0
    assert result.attempted > 0
