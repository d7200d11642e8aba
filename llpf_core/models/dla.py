"""DLA (Deep Layer Aggregation) for 32x32 CIFAR images, following kuangliu/pytorch-cifar's `DLA()`.

Yu et al. (2018), "Deep layer aggregation". The CIFAR network is three 3x3 conv-BN-ReLU stages
(`base`, `layer1`, `layer2`) and four aggregation trees (`layer3` .. `layer6`) of residual basic
blocks. A tree of level 1 has a `left_node` and a `right_node` block and a `root` that
concatenates their outputs; a tree of level 2 also has a `prev_root` block and a level-1 subtree
`level_1`, whose outputs the root aggregates too. The paper's DLA phases (Table 2) address these
names (`base.0.*`, `layer3.left_node.*`, `layer4.prev_root.*`, `layer4.level_1.*`, ...), so they,
and the order in which the modules are registered, are kuangliu's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llpf_core.models.registry import ArchSpec, register


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 stride-1 convolution without bias, BatchNorm, ReLU (indices 0, 1, 2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(
            out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(out_channels)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Root(nn.Module):
    """Aggregation node: concatenate the inputs along channels, 1x1 conv, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return F.relu(self.bn(self.conv(torch.cat(xs, dim=1))))


class Tree(nn.Module):
    """Aggregation tree of `level` 1 or more; the first block of each path applies `stride`.

    Modules are registered as kuangliu registers them: `root` first, then (level > 1) the
    subtrees `level_{level-1}` .. `level_1` and `prev_root`, then `left_node` and `right_node`.
    """

    def __init__(self, in_channels: int, out_channels: int, level: int = 1, stride: int = 1):
        super().__init__()
        self.level = level
        if level == 1:
            self.root = Root(2 * out_channels, out_channels)
            self.left_node = BasicBlock(in_channels, out_channels, stride=stride)
        else:
            self.root = Root((level + 2) * out_channels, out_channels)
            for i in reversed(range(1, level)):
                self.add_module(f"level_{i}", Tree(in_channels, out_channels, i, stride))
            self.prev_root = BasicBlock(in_channels, out_channels, stride=stride)
            self.left_node = BasicBlock(out_channels, out_channels, stride=1)
        self.right_node = BasicBlock(out_channels, out_channels, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.prev_root(x)] if self.level > 1 else []
        for i in reversed(range(1, self.level)):
            x = getattr(self, f"level_{i}")(x)
            xs.append(x)
        x = self.left_node(x)
        xs.append(x)
        x = self.right_node(x)
        xs.append(x)
        return self.root(xs)


class DLA(nn.Module):
    """DLA for 3x32x32 inputs: logits (B, num_classes)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.base = conv_bn_relu(3, 16)
        self.layer1 = conv_bn_relu(16, 16)
        self.layer2 = conv_bn_relu(16, 32)
        self.layer3 = Tree(32, 64, level=1, stride=1)
        self.layer4 = Tree(64, 128, level=2, stride=2)
        self.layer5 = Tree(128, 256, level=2, stride=2)
        self.layer6 = Tree(256, 512, level=1, stride=2)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.base(x)))
        x = self.layer6(self.layer5(self.layer4(self.layer3(x))))

        # (B, 512, 4, 4) -> (B, 512); kuangliu pools with a fixed 4x4 window
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x)


def dla(num_classes: int = 10) -> DLA:
    """DLA (Yu et al., 2018) for CIFAR as in kuangliu/pytorch-cifar; logits (B, num_classes).

    16,291,386 parameters for 10 classes: no source states a count; computed, and equal to the
    reference code's (same names and shapes).
    """
    return DLA(num_classes=num_classes)


register(
    ArchSpec(
        name="dla",
        factory=dla,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "dla-cifar10", "cifar100": "dla-cifar100"},
        preset="dla",
        description="Deep Layer Aggregation for CIFAR (kuangliu/pytorch-cifar)",
    )
)
