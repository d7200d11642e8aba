"""Loss and accuracy of a model on whole dataset splits (no augmentation, evaluation mode)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llpf_core.data.registry import ImageData


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy and accuracy (fraction in [0, 1]) over a split."""

    loss: float
    accuracy: float


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageData, images: Tensor, labels: Tensor, batch_size: int = 1024
) -> Metrics:
    """Metrics of `model` on `images` (N, C, H, W) in [0, 1] and `labels` (N,).

    Sums on the device and reads back once, at the end.
    """
    model.eval()
    total_loss = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.long)
    for start in range(0, len(labels), batch_size):
        batch = data.normalize(images[start : start + batch_size])
        target = labels[start : start + batch_size]
        logits = model(batch)
        total_loss += F.cross_entropy(logits.float(), target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    count = max(len(labels), 1)
    return Metrics(loss=float(total_loss) / count, accuracy=float(correct) / count)


@torch.no_grad()
def recalibrate_norm_statistics(
    model: nn.Module, data: ImageData, batches: int, batch_size: int = 256
) -> None:
    """Re-estimate BatchNorm running statistics at the model's current weights.

    Running statistics are not weights: after Move, or on a point interpolated between two
    models, they describe some other point. Following common practice in mode-connectivity work
    (Garipov et al., 2018), they are recomputed from `batches` un-augmented training batches before
    a point is evaluated. Models without such statistics are left untouched.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
    ]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batches
    model.train()
    count = len(data.train_y)
    for index in range(batches):
        start = (index * batch_size) % max(count - batch_size + 1, 1)
        model(data.normalize(data.train_x[start : start + batch_size]))
    for module, momentum in zip(norms, momenta, strict=False):
        module.momentum = momentum
    model.eval()
