"""RegNetX-200MF for 32x32 CIFAR images, following kuangliu/pytorch-cifar's `RegNetX_200MF()`.

Radosavovic et al. (2020), "Designing network design spaces". The CIFAR version the paper uses
(appendix A.11) keeps RegNetX-200MF's stages (depths 1, 1, 4, 7; widths 24, 56, 152, 368; group
width 8; bottleneck ratio 1; no squeeze-excitation) but differs from torchvision's: a 3x3
stride-1 stem of 64 channels, and the first two stages keep the resolution (strides 1, 1, 2, 2),
so a 32x32 image ends as an 8x8 map. Module names are kuangliu's (`conv1`, `layer1.0.conv2`,
`layer1.0.shortcut.0`, `linear`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llpf_core.models.registry import ArchSpec, register


@dataclass(frozen=True)
class RegNetConfig:
    """Per-stage depths, widths and strides, and the block's group width and bottleneck ratio."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    group_width: int
    bottleneck_ratio: float = 1.0
    se_ratio: float = 0.0


REGNET_X_200MF = RegNetConfig(
    depths=(1, 1, 4, 7), widths=(24, 56, 152, 368), strides=(1, 1, 2, 2), group_width=8
)


class SqueezeExcitation(nn.Module):
    """Channel gating: global mean, 1x1 conv + ReLU, 1x1 conv + sigmoid, multiply."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.se1 = nn.Conv2d(channels, squeezed, kernel_size=1)
        self.se2 = nn.Conv2d(squeezed, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.se2(F.relu(self.se1(gate))))


class XBlock(nn.Module):
    """Residual bottleneck with a grouped 3x3 convolution (the "X" block of RegNet)."""

    def __init__(
        self,
        in_width: int,
        out_width: int,
        stride: int,
        group_width: int,
        bottleneck_ratio: float,
        se_ratio: float,
    ) -> None:
        super().__init__()
        hidden = int(round(out_width * bottleneck_ratio))
        self.conv1 = nn.Conv2d(in_width, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(
            hidden,
            hidden,
            kernel_size=3,
            stride=stride,
            padding=1,
            groups=hidden // group_width,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.se = (
            SqueezeExcitation(hidden, int(round(in_width * se_ratio))) if se_ratio > 0 else None
        )
        self.conv3 = nn.Conv2d(hidden, out_width, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_width)

        self.shortcut = nn.Sequential()
        if stride != 1 or in_width != out_width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_width, out_width, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_width),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RegNet(nn.Module):
    """RegNet for 3x32x32 inputs: 64-channel stride-1 stem, four stages, pooling, `linear`."""

    def __init__(self, config: RegNetConfig = REGNET_X_200MF, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)

        width = 64
        for index, (depth, out_width, stride) in enumerate(
            zip(config.depths, config.widths, config.strides, strict=True), start=1
        ):
            blocks = []
            for i in range(depth):
                blocks.append(
                    XBlock(
                        width,
                        out_width,
                        stride if i == 0 else 1,
                        config.group_width,
                        config.bottleneck_ratio,
                        config.se_ratio,
                    )
                )
                width = out_width
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.stages = len(config.depths)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for index in range(1, self.stages + 1):
            x = getattr(self, f"layer{index}")(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(x)


def regnet_x_200mf(num_classes: int = 10) -> RegNet:
    """RegNetX-200MF (Radosavovic et al., 2020) for CIFAR as in kuangliu/pytorch-cifar.

    Logits (B, num_classes). 2,321,946 parameters for 10 classes: no source states a count;
    computed, and equal to the reference code's (same names and shapes).
    """
    return RegNet(REGNET_X_200MF, num_classes=num_classes)


register(
    ArchSpec(
        name="regnet_x_200mf",
        factory=regnet_x_200mf,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "regnet_x_200mf-cifar10", "cifar100": "regnet_x_200mf-cifar10"},
        preset=None,
        description="RegNetX-200MF with a 64-channel stride-1 stem (kuangliu/pytorch-cifar)",
    )
)
