"""EfficientNet-B0 for 32x32 CIFAR images, following kuangliu/pytorch-cifar's `EfficientNetB0()`.

Tan & Le (2019), "EfficientNet: rethinking model scaling for convolutional neural networks". The
CIFAR version the paper uses (appendix A.11) differs from torchvision's B0: the 3x3 stem has
stride 1, the 320-channel output of the last stage goes straight to the linear classifier (no
1x1 head convolution to 1280 channels), and dropout 0.2 precedes the classifier. The seven
stages keep the B0 strides (1, 2, 2, 2, 1, 2, 1), so a 32x32 image ends as a 2x2 map.

Known shortcomings of that implementation, kept so that parameter names and counts match it:
the first block (expansion 1) owns an expansion convolution and BatchNorm (`layers.0.conv1`,
`layers.0.bn1`, 1,088 parameters) that its forward pass skips, so they never get a gradient;
and its drop-connect rate is `0.2 * b / blocks` with a block counter `b` that never advances,
so no block drops anything. We reproduce the effective behaviour: no drop-connect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llpf_core.models.registry import ArchSpec, register

# Stages of B0: (expansion, output channels, blocks, kernel size, stride of the first block).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 16, 1, 3, 1),
    (6, 24, 2, 3, 2),
    (6, 40, 2, 5, 2),
    (6, 80, 3, 3, 2),
    (6, 112, 3, 5, 1),
    (6, 192, 4, 5, 2),
    (6, 320, 1, 3, 1),
)


class SqueezeExcitation(nn.Module):
    """Channel gating: global mean, 1x1 conv + swish, 1x1 conv + sigmoid, multiply."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.se1 = nn.Conv2d(channels, squeezed, kernel_size=1)
        self.se2 = nn.Conv2d(squeezed, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.se2(F.silu(self.se1(gate))))
        return x * gate


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expansion, depthwise kxk, squeeze-excitation, 1x1 projection.

    The residual is added when the block keeps both resolution and channel count.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expansion: int,
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        self.expansion = expansion
        hidden = expansion * in_channels

        # created even for expansion 1, where forward skips it (see the module docstring)
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(
            hidden,
            hidden,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=hidden,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.se = SqueezeExcitation(hidden, int(in_channels * se_ratio))
        self.conv3 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expansion == 1 else F.silu(self.bn1(self.conv1(x)))
        out = F.silu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.se(out)))
        return out + x if self.residual else out


class EfficientNet(nn.Module):
    """EfficientNet for 3x32x32 inputs: stride-1 stem, MBConv `layers`, dropout, `linear`."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int], ...] = B0_STAGES,
        num_classes: int = 10,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)

        blocks: list[nn.Module] = []
        channels = 32
        for expansion, out_channels, count, kernel_size, stride in stages:
            for i in range(count):
                block_stride = stride if i == 0 else 1
                blocks.append(MBConv(channels, out_channels, kernel_size, block_stride, expansion))
                channels = out_channels
        self.layers = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(self.dropout(x))


def efficientnet_b0(num_classes: int = 10) -> EfficientNet:
    """EfficientNet-B0 (Tan & Le, 2019) for CIFAR as in kuangliu/pytorch-cifar; logits (B, C).

    3,599,686 parameters for 10 classes, 1,088 of them unused (see the module docstring): no
    source states a count; computed, and equal to the reference code's (same names and shapes).
    """
    return EfficientNet(stages=B0_STAGES, num_classes=num_classes)


register(
    ArchSpec(
        name="efficientnet_b0",
        factory=efficientnet_b0,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "efficientnet_b0-cifar10", "cifar100": "efficientnet_b0-cifar10"},
        preset=None,
        description="EfficientNet-B0 with a stride-1 stem and no head convolution "
        "(kuangliu/pytorch-cifar)",
    )
)
