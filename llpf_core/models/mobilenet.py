"""MobileNetV2 for 32x32 CIFAR images, as the paper uses it (chenhang98/mobileNet-v2_cifar10).

Sandler et al. (2018), "MobileNetV2: inverted residuals and linear bottlenecks". The paper's
appendix A.11 takes its CIFAR-10 MobileNetV2 from Chenhang's repository (reference "Chenhang, a":
github.com/chenhang98/mobileNet-v2_cifar10). That version keeps the ImageNet network's 17
bottlenecks and 1280-channel last convolution but sets the stride of the stem and of the first
two strided stages to 1, so the maps go 32 -> 16 -> 8. Unlike torchvision's, every bottleneck,
including the first one (expansion 1), has its 1x1 expansion convolution, and the classifier is
one linear layer without dropout. Module names are that repository's (`conv0`, `bn0`,
`bottlenecks.N.conv1` .. `bn3`, `conv1`, `bn1`, `fc`), as is the weight initialisation.

`mobilenet_v2_torchvision` is the other common CIFAR adaptation (chenyaofo/pytorch-cifar-models):
torchvision's network with the stem and the second stage at stride 1. It is not registered; use
it as the custom architecture `llpf_core.models.mobilenet:mobilenet_v2_torchvision`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from llpf_core.models.init import he_fan_out_init
from llpf_core.models.registry import ArchSpec, register

# (expansion t, output channels c, blocks n, stride s of the first block); the ImageNet network
# has strides 2, 2 where this one has 1, 1 in the second and third rows.
CIFAR_BOTTLENECKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 1),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expansion + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 projection."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_channels
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(
            hidden, hidden, kernel_size=3, stride=stride, padding=1, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv1(x)))
        out = F.relu6(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 3x32x32 inputs: stem, 17 bottlenecks, 1x1 conv to 1280, pooling, `fc`."""

    def __init__(
        self,
        num_classes: int = 10,
        bottlenecks: tuple[tuple[int, int, int, int], ...] = CIFAR_BOTTLENECKS,
    ) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(32)

        blocks = []
        channels = 32
        for expansion, out_channels, count, stride in bottlenecks:
            for i in range(count):
                block_stride = stride if i == 0 else 1
                blocks.append(Bottleneck(channels, out_channels, expansion, block_stride))
                channels = out_channels
        self.bottlenecks = nn.Sequential(*blocks)

        self.conv1 = nn.Conv2d(channels, 1280, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(1280)
        self.fc = nn.Linear(1280, num_classes)
        he_fan_out_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn0(self.conv0(x)))
        x = self.bottlenecks(x)  # (B, 320, 8, 8)
        x = F.relu6(self.bn1(self.conv1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def mobilenet_v2(num_classes: int = 10) -> MobileNetV2:
    """MobileNetV2 (Sandler et al., 2018) for CIFAR as in chenhang98/mobileNet-v2_cifar10.

    The implementation the paper cites (appendix A.11, "Chenhang, a"), width multiplier 1.
    Logits (B, num_classes). 2,237,770 parameters for 10 classes: no source states a count;
    computed, and equal to the reference code's (same names and shapes).
    """
    return MobileNetV2(num_classes=num_classes)


def mobilenet_v2_torchvision(num_classes: int = 10) -> torchvision.models.MobileNetV2:
    """torchvision's MobileNetV2 with the stem and the second stage at stride 1 (not registered).

    The adaptation of chenyaofo/pytorch-cifar-models (`cifar10_mobilenetv2_x1_0`, listed there
    with 2.24 M parameters): 2,236,682 parameters for 10 classes, torchvision's names.
    """
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)
    return model


register(
    ArchSpec(
        name="mobilenet_v2",
        factory=mobilenet_v2,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "mobilenet_v2-cifar10", "cifar100": "mobilenet_v2-cifar10"},
        preset=None,
        description="MobileNetV2 with stride-1 stem and early stages (chenhang98, the paper's)",
    )
)
