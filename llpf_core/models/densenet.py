"""DenseNet-121 for 32x32 CIFAR images, following kuangliu/pytorch-cifar's `DenseNet121()`.

Huang et al. (2017), "Densely connected convolutional networks": four dense blocks of 6, 12, 24
and 16 bottleneck layers with growth rate 32, joined by transitions that halve the channels and
the resolution. The CIFAR version the paper uses (appendix A.11) replaces torchvision's 7x7
stride-2 stem, its BatchNorm and its max-pooling with a single 3x3 stride-1 convolution, so the
dense blocks see 32, 16, 8 and 4 pixel maps. Module names are kuangliu's (`conv1`, `dense1.0.bn1`,
`trans1.conv`, `bn`, `linear`); a bottleneck concatenates its new features in front of its input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llpf_core.models.registry import ArchSpec, register


class Bottleneck(nn.Module):
    """BN-ReLU-Conv1x1 (to 4k channels), BN-ReLU-Conv3x3 (to k channels); output [new, input]."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth_rate, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(F.relu(self.bn1(x)))
        new = self.conv2(F.relu(self.bn2(new)))
        return torch.cat([new, x], dim=1)


class Transition(nn.Module):
    """BN-ReLU-Conv1x1 to `out_channels`, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC for 3x32x32 inputs with `blocks` bottlenecks per dense block."""

    def __init__(
        self,
        blocks: tuple[int, int, int, int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        reduction: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False)

        # dense1..dense4 with trans1..trans3 between them, registered in data-flow order
        for index, count in enumerate(blocks, start=1):
            layers = [Bottleneck(channels + i * growth_rate, growth_rate) for i in range(count)]
            self.add_module(f"dense{index}", nn.Sequential(*layers))
            channels += count * growth_rate
            if index < len(blocks):
                reduced = int(math.floor(channels * reduction))
                self.add_module(f"trans{index}", Transition(channels, reduced))
                channels = reduced

        self.bn = nn.BatchNorm2d(channels)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.trans3(self.dense3(x))
        x = self.dense4(x)

        # (B, 1024, 4, 4) -> (B, 1024); kuangliu pools with a fixed 4x4 window
        x = F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1)
        return self.linear(torch.flatten(x, 1))


def densenet121(num_classes: int = 10) -> DenseNet:
    """DenseNet-121 (Huang et al., 2017) for CIFAR as in kuangliu/pytorch-cifar; logits (B, C).

    Blocks (6, 12, 24, 16), growth rate 32, compression 0.5, 3x3 stem of 64 channels. 6,956,298
    parameters for 10 classes: no source states a count; computed, and equal to the reference
    code's (same names and shapes).
    """
    return DenseNet(blocks=(6, 12, 24, 16), growth_rate=32, num_classes=num_classes)


register(
    ArchSpec(
        name="densenet",
        factory=densenet121,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "densenet-cifar10", "cifar100": "densenet-cifar10"},
        preset=None,
        description="DenseNet-121 with a 3x3 stride-1 stem (kuangliu/pytorch-cifar)",
    )
)
