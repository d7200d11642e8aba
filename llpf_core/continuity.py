"""Continuity check (section 5) and the linear-interpolation baseline.

Both evaluate the training loss along straight lines in weight space: between consecutive path
points (is the discrete path continuous?) and between the two modes (the loss barrier that LLPF
is meant to avoid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llpf_core.data.registry import ImageData
from llpf_core.evaluation import evaluate, recalibrate_norm_statistics
from llpf_core.geometry import interpolate
from llpf_core.settings import EvaluationSettings

logger = logging.getLogger(__name__)

StateLoader = Callable[[int], dict[str, Tensor]]


@dataclass(frozen=True)
class LineProfile:
    """Training loss along a straight line: `losses[k]` at `alphas[k]`, 0 = start, 1 = end."""

    alphas: list[float]
    losses: list[float]

    @property
    def max_loss(self) -> float:
        return max(self.losses)

    @property
    def barrier(self) -> float:
        """Max loss above the straight line joining the endpoint losses (Frankle et al., 2020)."""
        first, last = self.losses[0], self.losses[-1]
        pairs = zip(self.alphas, self.losses, strict=True)
        return max(loss - ((1 - a) * first + a * last) for a, loss in pairs)


def subset(data: ImageData, count: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed random subset of `count` training images and labels (all if None or larger)."""
    if count is None or count >= len(data.train_y):
        return data.train_x, data.train_y
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.train_y), generator=generator)[:count].to(data.device)
    return data.train_x[index], data.train_y[index]


@torch.no_grad()
def line_profile(
    model: nn.Module,
    start: dict[str, Tensor],
    end: dict[str, Tensor],
    data: ImageData,
    samples: int,
    images: Tensor,
    labels: Tensor,
    evaluation: EvaluationSettings,
    start_loss: float | None = None,
) -> LineProfile:
    """Training loss at `samples` evenly spaced points of the segment start-end (ends included).

    Every floating tensor of the state dicts, BatchNorm statistics included, is interpolated; the
    statistics are then re-estimated as configured in `evaluation`. `start_loss`, when known
    (the previous segment's end), is used instead of evaluating the start again.
    """
    alphas = torch.linspace(0.0, 1.0, samples).tolist()
    losses = [] if start_loss is None else [start_loss]
    for alpha in alphas[len(losses) :]:
        model.load_state_dict(interpolate(start, end, alpha))
        recalibrate_norm_statistics(model, data, evaluation.norm_recalibration_batches)
        losses.append(evaluate(model, data, images, labels, evaluation.batch_size).loss)
    return LineProfile(alphas=alphas, losses=losses)


@dataclass(frozen=True)
class SegmentProfile:
    """The interpolation between path points `position` and `position + 1`."""

    position: int
    profile: LineProfile


def check_continuity(
    model: nn.Module,
    load_point: StateLoader,
    point_count: int,
    data: ImageData,
    samples_per_segment: int,
    train_subset: int | None,
    evaluation: EvaluationSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[SegmentProfile]:
    """Loss along every segment between consecutive path points (section 5, Figure 5).

    `load_point(k)` returns the state dict of the path's k-th point, k in [0, point_count); each
    point is loaded once. Returns one profile per segment, in path order.
    """
    images, labels = subset(data, train_subset)
    segments = []
    previous = {k: v.to(data.device) for k, v in load_point(0).items()}
    for position in range(point_count - 1):
        current = {k: v.to(data.device) for k, v in load_point(position + 1).items()}
        # Consecutive segments share a point: its loss is evaluated once.
        known = segments[-1].profile.losses[-1] if segments else None
        profile = line_profile(
            model, previous, current, data, samples_per_segment, images, labels, evaluation, known
        )
        segments.append(SegmentProfile(position, profile))
        if progress is not None:
            progress(position + 1, point_count - 1, profile.max_loss)
        previous = current
    return segments
