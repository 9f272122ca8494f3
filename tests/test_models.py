"""Committed models and shipped data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import striate
from striate import StriateError
from striate.models import lenet_digits
from striate.models.training import PORTABLE_ENV


def test_digits_split_is_fixed_and_disjoint():
    from sklearn.datasets import load_digits
    xtr, ytr = striate.datasets.digits("train")
    xte, yte = striate.datasets.digits("test")
    assert xtr.shape == (1437, 1, 16, 16) and xte.shape == (360, 1, 16, 16)
    raw = load_digits()
    np.testing.assert_array_equal(yte, raw.target[::5])
    np.testing.assert_array_equal(xte[:, 0, ::2, ::2], raw.images[::5] / 16.0)
    np.testing.assert_array_equal(xte[:, 0, 1::2, 1::2], xte[:, 0, ::2, ::2])
    assert sorted(set(ytr.tolist())) == list(range(10))
    with pytest.raises(StriateError, match="split must be 'train' or 'test', not 'val'"):
        striate.datasets.digits("val")


def test_committed_lenet_is_accurate(lenet):
    assert isinstance(lenet, lenet_digits.LeNetDigits) and not lenet.training
    assert striate.models.accuracy("lenet-digits", lenet) >= 0.97


@pytest.mark.parametrize("name, top1", [("dscnn-digits", 0.985), ("tdnn-digits", 0.98)])
def test_committed_models_are_accurate(name, top1):
    model = striate.models.load(name)
    assert not model.training and striate.models.accuracy(name, model) >= top1


def test_digit_rows_are_the_digits_read_row_by_row():
    x, y = striate.datasets.digit_rows("test")
    images, labels = striate.datasets.digits("test")
    np.testing.assert_array_equal(x[:, :, 3], images[:, 0, 3, :])    # time step 3 = row 3
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("name", [
    "lenet-digits", "tdnn-digits",
    # about 3 minutes on the portable kernels (its depthwise layers without SIMD)
    pytest.param("dscnn-digits", marks=pytest.mark.slow)])
def test_training_reproduces_committed_weights_bit_for_bit(name):
    """In a process of portable kernels (`striate.models.training`), so on any x86-64 CPU."""
    trained = striate.models.train(name, log=lambda line: None).state_dict()
    committed = torch.load(striate.models.weights_path(name), weights_only=True)
    assert trained.keys() == committed.keys()
    for key, value in committed.items():
        assert torch.equal(trained[key], value), f"{key} differs from the committed weights"


def test_training_gives_the_same_bits_on_an_emulated_amd_cpu():
    """A few batches of each model's training, natively and under QEMU's user-mode emulation of
    an AVX2 AMD EPYC (another vendor, another vector width and other MKL code paths than this
    machine's): the weights must agree bit for bit, as training on another machine would."""
    script = [str(Path(__file__).with_name("training_steps.py")), *striate.models.names()]
    env = {**os.environ, **PORTABLE_ENV}
    runs = [subprocess.run(command, env=env, capture_output=True, text=True)
            for command in ([sys.executable, *script],
                            ["qemu-x86_64", "-cpu", "EPYC-Milan", sys.executable, *script])]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    native, emulated = (run.stdout for run in runs)
    assert len(native.splitlines()) == len(striate.models.names())
    assert native == emulated


def test_unknown_model_name():
    with pytest.raises(StriateError, match=r"model name must be one of \['dscnn-digits', "
                                           r"'lenet-digits', 'tdnn-digits'\], not 'resnet'"):
        striate.models.load("resnet")
