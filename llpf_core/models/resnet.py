"""ResNet-18 adapted to 32x32 CIFAR images, as in the paper's appendix A.11.

torchvision's ResNet-18 with the 7x7 stride-2 stem convolution replaced by a 3x3 stride-1 one and
the stem max-pooling removed, so that layer1 sees 32x32 feature maps. Parameter names stay
torchvision's (`conv1.weight`, `bn1.weight`, `layer1.0.conv1.weight`, `fc.weight`, ...): the
ResNet18 phases of Table 2 address them.
"""

from __future__ import annotations

import torchvision
from torch import nn

from llpf_core.models.registry import ArchSpec, register


def resnet18(num_classes: int = 10) -> torchvision.models.ResNet:
    """ResNet-18 (He et al., 2016) for 3x32x32 inputs; logits (B, num_classes).

    Follows the paper's appendix A.11: `torchvision.models.resnet18` with `conv1` a 3x3, stride 1,
    padding 1 convolution without bias and `maxpool` an identity. 11,173,962 parameters for 10
    classes (torchvision's 11,689,512 for ImageNet, less 7,680 in the smaller stem and 507,870 in
    the smaller classifier).
    """
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)

    # Assigning to an existing attribute keeps the module's place, so parameter order is kept.
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


register(
    ArchSpec(
        name="resnet18",
        factory=resnet18,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "resnet18-cifar10", "cifar100": "resnet18-cifar100"},
        preset="resnet18",
        description="ResNet-18 (torchvision) with a 3x3 stride-1 stem and no max-pooling",
    )
)
