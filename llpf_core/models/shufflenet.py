"""The paper's "ShuffleNetv2" for 32x32 CIFAR images (chenhang98/shuffleNet-cifar10).

The paper's appendix A.11 takes its CIFAR-10 ShuffleNet from Chenhang's repository (reference
"Chenhang, b": github.com/chenhang98/shuffleNet-cifar10), while Table 4 calls the model
ShuffleNetv2. That repository implements the ShuffleNet units of Zhang et al. (2018),
"ShuffleNet: an extremely efficient convolutional neural network for mobile devices" (the first
version): grouped 1x1 convolution, channel shuffle, depthwise 3x3, grouped 1x1, with an identity
shortcut added, or, in the first unit of a stage, a shortcut concatenated. The authors' code
builds it with one group and width 1 (`ShuffleNet(10, g=1, scale_factor=1)`: 144, 288, 576
channels), which is what `shufflenet_g1` builds and the registry calls "shufflenet_v2". For
32x32 inputs the stem is a 3x3 stride-1 convolution without max-pooling and the first stage
keeps the resolution (32 -> 32 -> 16 -> 8). Module names are that repository's (`conv1`, `bn1`,
`stage2.0.gconv1`, `.bn1`, `.dwconv`, `.bn`, `.gconv2`, `.bn2`, `fc`), as is the weight
initialisation; the modules are registered in data-flow order (the reference registers `fc`
before the stages).

`shufflenet_v2_x1_0` is ShuffleNet V2 (Ma et al., 2018) as chenyaofo/pytorch-cifar-models adapts
torchvision's for CIFAR (stride-1 stem, no max-pooling). It is not registered; use it as the
custom architecture `llpf_core.models.shufflenet:shufflenet_v2_x1_0`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from llpf_core.models.init import he_fan_out_init
from llpf_core.models.registry import ArchSpec, register

# Output channels of the first strided stage for each group count (ShuffleNet paper, Table 1).
STAGE2_CHANNELS: dict[int, int] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` groups: (B, g*n, H, W) -> (B, n*g, H, W)."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNet unit; `concat` units (first of a stage) concatenate a pooled shortcut.

    An identity unit maps C channels to C and adds its input. A concatenating unit maps C_in to
    C_out: the residual branch produces C_out - C_in channels, the shortcut (2x2 average pooling
    when `downsample`, else the input) the other C_in.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        concat: bool = False,
        downsample: bool = False,
        group_first: bool = True,
    ) -> None:
        super().__init__()
        self.groups = groups
        self.concat = concat
        self.downsample = downsample
        neck = out_channels // 4
        branch_out = out_channels - in_channels if concat else out_channels
        if neck % groups:
            raise ValueError(f"bottleneck width {neck} is not divisible by groups={groups}")

        self.gconv1 = nn.Conv2d(
            in_channels, neck, kernel_size=1, groups=groups if group_first else 1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(neck)
        self.dwconv = nn.Conv2d(
            neck,
            neck,
            kernel_size=3,
            stride=2 if downsample else 1,
            padding=1,
            groups=neck,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(neck)
        self.gconv2 = nn.Conv2d(neck, branch_out, kernel_size=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(branch_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.gconv1(x)))
        out = channel_shuffle(out, self.groups)
        out = self.bn(self.dwconv(out))
        out = self.bn2(self.gconv2(out))
        if not self.concat:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2) if self.downsample else x
        return F.relu(torch.cat([out, shortcut], dim=1))


class ShuffleNet(nn.Module):
    """ShuffleNet (v1 units) for 3x32x32 inputs: stem, stages 2-4 (4, 8, 4 units), `fc`."""

    def __init__(self, num_classes: int = 10, groups: int = 1, width: float = 1.0) -> None:
        super().__init__()
        if groups not in STAGE2_CHANNELS:
            raise ValueError(f"groups={groups}; valid: {', '.join(map(str, STAGE2_CHANNELS))}")
        stage2 = int(width * STAGE2_CHANNELS[groups])

        self.conv1 = nn.Conv2d(3, 24, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.stage2 = self._stage(24, stage2, 3, groups, downsample=False, group_first=False)
        self.stage3 = self._stage(stage2, 2 * stage2, 7, groups)
        self.stage4 = self._stage(2 * stage2, 4 * stage2, 3, groups)
        self.fc = nn.Linear(4 * stage2, num_classes)
        he_fan_out_init(self)

    @staticmethod
    def _stage(
        in_channels: int,
        out_channels: int,
        repeats: int,
        groups: int,
        downsample: bool = True,
        group_first: bool = True,
    ) -> nn.Sequential:
        first = ShuffleUnit(
            in_channels, out_channels, groups, True, downsample, group_first=group_first
        )
        rest = [ShuffleUnit(out_channels, out_channels, groups) for _ in range(repeats)]
        return nn.Sequential(first, *rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage4(self.stage3(self.stage2(x)))  # (B, 576, 8, 8) for groups=1
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def shufflenet_g1(num_classes: int = 10) -> ShuffleNet:
    """The paper's CIFAR "ShuffleNetv2": chenhang98/shuffleNet-cifar10 with g=1, width 1.

    ShuffleNet units of Zhang et al. (2018) with one group; logits (B, num_classes). 960,706
    parameters for 10 classes: no source states a count; computed, and equal to the reference
    code's (same names and shapes).
    """
    return ShuffleNet(num_classes=num_classes, groups=1, width=1.0)


def shufflenet_v2_x1_0(num_classes: int = 10) -> torchvision.models.ShuffleNetV2:
    """ShuffleNet V2 x1.0 (Ma et al., 2018) for CIFAR: stride-1 stem, no max-pooling.

    torchvision's network as chenyaofo/pytorch-cifar-models adapts it (`cifar10_shufflenetv2_x1_0`,
    listed there with 1.26 M parameters): 1,263,854 parameters for 10 classes. Not registered.
    """
    model = torchvision.models.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    model.conv1[0].stride = (1, 1)
    model.maxpool = nn.Identity()
    return model


register(
    ArchSpec(
        name="shufflenet_v2",
        factory=shufflenet_g1,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "shufflenet_v2-cifar10", "cifar100": "shufflenet_v2-cifar10"},
        preset=None,
        description="the paper's CIFAR ShuffleNet: chenhang98's ShuffleNet units, 1 group",
    )
)
