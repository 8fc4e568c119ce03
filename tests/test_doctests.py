"""Docstring examples of the public core are run."""

import doctest
import importlib

import pytest

MODULES = [
    "eqreg_hf.core.config",
    "eqreg_hf.core.groups",
    "eqreg_hf.core.group_families",
    "eqreg_hf.core.taps",
    "eqreg_hf.core.regularizer",
    "eqreg_hf.core.measure",
    "eqreg_hf.cli.flags",
    "eqreg_hf.tasks.evidence",
    "eqreg_hf.tasks.consistency",
    "eqreg_hf.hub.card_facts",
    "eqreg_hf.app.tasks",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module,
        extraglobs={"torch": importlib.import_module("torch"), "nn": importlib.import_module("torch.nn")},
    )
    assert result.failed == 0
    assert result.attempted > 0
