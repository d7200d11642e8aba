"""Weight initialisation shared by the CIFAR re-implementations."""

from __future__ import annotations

import math

from torch import nn


def he_fan_out_init(model: nn.Module) -> None:
    """He-normal convolutions over the output fan, BatchNorm at (1, 0); Linear keeps PyTorch's.

    The initialisation of chenhang98's CIFAR-10 MobileNetV2 and ShuffleNet, which the paper's
    authors used.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
