import os

# Tests build the fast backend without a profile (half the build time) and at -O1 (a third
# less g++ time, a tenth slower); test_driver.py runs the profile-guided -O3 build users get.
os.environ.setdefault("STRIATE_SIM_PGO", "0")
os.environ.setdefault("STRIATE_SIM_OPT", "-O1")

import numpy as np
import pytest
import torch

import striate


@pytest.fixture(scope="session")
def digits_train():
    return striate.datasets.digits("train")


@pytest.fixture(scope="session")
def digits_test():
    return striate.datasets.digits("test")


@pytest.fixture(scope="session")
def lenet():
    return striate.models.load("lenet-digits")


@pytest.fixture(scope="session")
def calibration(digits_train):
    return digits_train[0][:512]


@pytest.fixture(scope="session")
def lenet_program(lenet, calibration):
    return striate.compile(lenet, calibration)


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def device():
    """The default configuration on the Verilator backend, one per test module."""
    import striate
    with striate.open("verilator") as dev:
        yield dev
