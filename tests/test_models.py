"""Committed models and shipped data."""

import numpy as np
import pytest
import torch

import striate
from striate import StriateError
from striate.models import lenet_digits


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
    assert lenet_digits.accuracy(lenet) >= 0.97


def test_training_reproduces_committed_weights_bit_for_bit():
    trained = lenet_digits.train(log=lambda line: None).state_dict()
    committed = torch.load(striate.models.weights_path("lenet-digits"), weights_only=True)
    assert trained.keys() == committed.keys()
    for name, value in committed.items():
        assert torch.equal(trained[name], value), f"{name} differs from the committed weights"


def test_unknown_model_name():
    with pytest.raises(StriateError, match=r"model name must be one of \['lenet-digits'\], not "
                                           r"'resnet'"):
        striate.models.load("resnet")
