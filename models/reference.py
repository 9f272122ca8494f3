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
* `lenet5`: LeNet-5's layer shapes (LeCun et al., 1998) on 32 x 32 x 1: 5x5 convolutions of 6
  and 16 filters, each followed by 2 x 2 pooling, then 120-84-10 fully connected; with ReLU and
  max pooling, as it is usually rebuilt today, and C3 connected to all six maps (the paper
  wires each C3 map to a subset of them).
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
>>> lenet5()(torch.zeros(2, 1, 32, 32)).shape
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


def lenet5(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, classes)).eval()


def tdnn(features: int = 40, classes: int = 12) -> nn.Module:
    def layer(c_in, c_out, k, stride=1):
        return [nn.Conv1d(c_in, c_out, k, stride, padding=k // 2, bias=False),
                nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(
        *layer(features, 64, 5), *layer(64, 64, 3, 2), nn.MaxPool1d(2),
        *layer(64, 64, 3), *layer(64, 64, 3),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, classes)).eval()


# Networks larger than any on-chip memory: they run streamed from external memory
# (`striate.sw.mapping.stream`).

class _Basic(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, the input (or its 1x1 strided projection) added,
    ReLU (PyTorch's symmetric padding)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNet18(nn.Module):
    """ImageNet ResNet-18 (224 x 224 x 3): a 7x7 stride-2 stem of 64 with a 3x3 stride-2 max
    pool, four stages of two basic blocks (64, 128, 256, 512 filters), a 7 x 7 average pool
    and a 1000-way classifier: 1.82 G MACs, 11.7 M weights."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, c = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_Basic(c, width, stride), _Basic(width, width, 1)]
            c = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(7)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def resnet18(classes: int = 1000) -> nn.Module:
    return ResNet18(classes).eval()


def vgg_cifar(classes: int = 10) -> nn.Module:
    """A VGG-style CIFAR-10 net at full width (32 x 32 x 3): 3x3 conv-BN-ReLU pairs of 64, 128
    and 256 filters, each pair followed by a 2 x 2 max pool, and a classifier on the 4 x 4 x 256
    map: 153 M MACs, 1.15 M weights."""
    layers, c = [], 3
    for width in (64, 128, 256):
        for _ in range(2):
            layers += [nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            c = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256 * 4 * 4, classes)).eval()


def mobilenet_v1(width: float = 0.25, classes: int = 2, size: int = 96) -> nn.Module:
    """MobileNetV1 at ``width`` on ``size`` x ``size`` x 3 (the MLPerf Tiny visual wake words
    model: 0.25, 96, 2 classes): a 3x3 stride-2 stem, 13 depthwise-separable blocks, a global
    average pool and a classifier; 7.5 M MACs and 208 k weights at 0.25."""
    def ch(n):
        return max(8, int(n * width))

    def separable(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
                nn.BatchNorm2d(c_in), nn.ReLU(),
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    layers, c = [nn.Conv2d(3, ch(32), 3, 2, 1, bias=False), nn.BatchNorm2d(ch(32)),
                 nn.ReLU()], ch(32)
    for out, stride in plan:
        layers += separable(c, ch(out), stride)
        c = ch(out)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, classes)).eval()


class UNet(nn.Module):
    """A U-Net-style segmenter on 64 x 64 x 3: three encoder levels of two 3x3 conv-ReLU (16,
    32, 64 filters) with 2 x 2 max pools between them, a bottleneck of 128, and a decoder that
    upsamples (nearest, 2x), concatenates the encoder's map of the same size (the skip) and
    applies two 3x3 conv-ReLU, then a 1x1 conv to ``classes`` maps."""

    def __init__(self, classes: int = 2):
        super().__init__()
        def pair(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU(),
                                 nn.Conv2d(c_out, c_out, 3, 1, 1), nn.ReLU())
        self.enc = nn.ModuleList([pair(3, 16), pair(16, 32), pair(32, 64)])
        self.mid = pair(64, 128)
        self.dec = nn.ModuleList([pair(128 + 64, 64), pair(64 + 32, 32), pair(32 + 16, 16)])
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.mid(x)
        for block, skip in zip(self.dec, reversed(skips)):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], 1))
        return self.head(x)


def unet(classes: int = 2) -> nn.Module:
    return UNet(classes).eval()
