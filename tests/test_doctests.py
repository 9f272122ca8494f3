"""Run the docstring examples of every striate module (they pin the numerics contract)."""

import doctest
import importlib
import pkgutil

import pytest


def _modules():
    """Every module of the project, in every stage folder."""
    names = ["striate"]
    for package in ("striate.sw", "striate.hw", "striate.sim", "striate.models"):
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages(
            importlib.import_module(package).__path__, prefix=f"{package}.")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_contract_examples_exist():
    from striate.sw.ir import numerics
    assert doctest.testmod(numerics).attempted >= 8
