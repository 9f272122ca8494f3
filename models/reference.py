"""Reference architectures the field runs on this class of hardware, written as plain PyTorch
(untrained: for compiling, mapping and timing them, not for accuracy).

* `resnet8`: the MLPerf Tiny image-classification model (CIFAR-10, 32 x 32 x 3): a 3x3 stem of
  16 filters, three residual stages of 16, 32 and 64 filters (the last two with 1x1 stride-2
  projection shortcuts), ReLU after each add, an 8 x 8 average pool and a 10-way classifier.
  Its stride-2 3x3 layers pad as the reference int8 file (Keras 'same'): 0 rows and columns
  before, 1 after (``F.pad`` then ``padding=0``).
* `ds_cnn`: the MLPerf Tiny keyword-spotting model (DS-CNN, 49 x 10 MFCC): a 10 x 4 stride-2
  convolution of 64 filters padded (4, 5) rows and (1, 1) columns as the reference file, four
  depthwise-separable blocks (3x3 depthwise, 1x1 pointwise of 64, each with BatchNorm and
  ReLU), a 25 x 5 average pool and a 12-way classifier; 2.66 M MACs.
* `fc_autoencoder`: the MLPerf Tiny anomaly-detection model: 640-128-128-128-128-8-128-128-128-
  128-640, each hidden Linear followed by BatchNorm1d and ReLU, on ``N x 640`` inputs.
* `fire_stack`: SqueezeNet-style fire modules (1x1 squeeze, then 1x1 and 3x3 expands
  concatenated along channels) on 32 x 32 x 3 inputs, with max pooling between them (floor
  mode).
* `tdnn`: a time-delay net for keyword spotting on ``N x 40 x 64`` inputs (40 filterbank
  features, 64 frames): four Conv1d + BatchNorm1d + ReLU layers (contexts 5, 3, 3, 3; the
  second strided), a max pool, a global average pool and a 12-way classifier.

>>> import torch
>>> resnet8()(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> fc_autoencoder()(torch.zeros(2, 640)).shape
torch.Size([2, 640])
>>> fire_stack()(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> tdnn()(torch.zeros(2, 40, 64)).shape
torch.Size([2, 12])
>>> ds_cnn()(torch.zeros(2, 1, 49, 10)).shape
torch.Size([2, 12])
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the input (or its 1x1 strided projection), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        # Keras 'same': stride 1 pads 1 on every side, stride 2 pads 0 before and 1 after
        self.pads = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else \
            nn.Conv2d(c_in, c_out, 1, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(F.pad(x, self.pads))))
        y = self.bn2(self.conv2(y))
        y += self.shortcut(x)
        return self.relu(y)


class ResNet8(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.stage1 = _Block(16, 16, 1)
        self.stage2 = _Block(16, 32, 2)
        self.stage3 = _Block(32, 64, 2)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet8(classes: int = 10) -> nn.Module:
    return ResNet8(classes).eval()


def fc_autoencoder(features: int = 640, hidden: int = 128, code: int = 8) -> nn.Module:
    widths = [features] + [hidden] * 4 + [code] + [hidden] * 4
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    layers.append(nn.Linear(hidden, features))
    return nn.Sequential(*layers).eval()


class _Fire(nn.Module):
    def __init__(self, c_in: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        s = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1(s)), self.relu(self.expand3(s))], 1)


def fire_stack(classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        _Fire(32, 8, 16), _Fire(32, 8, 16), nn.MaxPool2d(2),
        _Fire(32, 16, 32), _Fire(64, 16, 32),
        nn.Conv2d(64, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


class _DsCnn(nn.Module):
    def __init__(self, classes: int, filters: int):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, (10, 4), 2, bias=False)
        self.bn = nn.BatchNorm2d(filters)
        blocks = []
        for _ in range(4):
            blocks += [nn.Conv2d(filters, filters, 3, 1, 1, groups=filters, bias=False),
                       nn.BatchNorm2d(filters), nn.ReLU(),
                       nn.Conv2d(filters, filters, 1, bias=False), nn.BatchNorm2d(filters),
                       nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d((25, 5))
        self.fc = nn.Linear(filters, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(F.pad(x, (1, 1, 4, 5)))))
        return self.fc(torch.flatten(self.pool(self.blocks(x)), 1))


def ds_cnn(classes: int = 12, filters: int = 64) -> nn.Module:
    return _DsCnn(classes, filters).eval()


def tdnn(features: int = 40, classes: int = 12) -> nn.Module:
    def layer(c_in, c_out, k, stride=1):
        return [nn.Conv1d(c_in, c_out, k, stride, padding=k // 2, bias=False),
                nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(
        *layer(features, 64, 5), *layer(64, 64, 3, 2), nn.MaxPool1d(2),
        *layer(64, 64, 3), *layer(64, 64, 3),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, classes)).eval()
