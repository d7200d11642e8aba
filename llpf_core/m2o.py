"""LLPF_M2O (Algorithm 2): a low-loss path from a mode toward the origin, across variance spheres.

Used to connect two modes on different spheres (section 5): starting from the mode on the larger
sphere, each iteration moves the applied layers toward the destination (Move, line 6), scales each
layer's learning rate by its variance ratio (AngleConformal, line 7) and trains r batches (line 8).
There is no VarianceCorrection: crossing spheres is the point.

Choices where the paper leaves room, all tested:
- The destination is the start's radial projection onto the other mode's sphere, per layer
  (`projection_onto_sphere`); Move toward it is Move toward the origin, stopped short.
- A layer stops moving once its variance is within `sphere_tolerance` (relative) of the other
  mode's, and stays stopped; the stage ends when every layer has stopped, or after `iterations`.
- AngleConformal is per layer: each layer is its own optimizer parameter group.
- Which mode is on the larger sphere is decided by the summed squared norm of the applied layers
  (Eq. 6: squared norm is proportional to variance).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData
from llpf_core.geometry import (
    angle_conformal_lr,
    layer_distances,
    layer_variances,
    move,
    projection_onto_sphere,
)
from llpf_core.path import PathRecorder, PathSink, StageClock, StageOutcome
from llpf_core.phases import m2o_layers
from llpf_core.settings import EvaluationSettings, M2OSettings
from llpf_core.training import RollingLoss, train_rounds

logger = logging.getLogger(__name__)

STAGE = "m2o"


@dataclass(frozen=True)
class SpherePlan:
    """Which mode M2O starts from, and whether it needs to run at all.

    `start` is "a" or "b": the mode on the larger variance sphere. `relative_gap` is how much
    larger its summed squared norm over the applied layers is, relative to the other's.
    """

    start: str
    layers: list[str]
    relative_gap: float
    needed: bool
    reason: str


def plan_spheres(
    model: nn.Module, mode_a: dict[str, Tensor], mode_b: dict[str, Tensor], settings: M2OSettings
) -> SpherePlan:
    """Compare the two modes' variance spheres over the layers M2O applies to.

    The modes count as on the same sphere when their summed squared norms over the applied
    layers differ by at most `sphere_tolerance` (relative); by Eq. 6 that is the variance summed
    over layers, weighted by layer size. A per-layer test would be dominated by small bias
    vectors, whose variances differ by large factors between any two modes.
    """
    names = m2o_layers(model, settings.exclude_norm, settings.exclude)
    norm_a = sum(float(mode_a[n].float().pow(2).sum()) for n in names)
    norm_b = sum(float(mode_b[n].float().pow(2).sum()) for n in names)
    start = "a" if norm_a >= norm_b else "b"
    larger, smaller = max(norm_a, norm_b), min(norm_a, norm_b)
    gap = larger / smaller - 1.0 if smaller > 0 else float("inf")
    if gap <= settings.sphere_tolerance:
        reason = (
            f"variance spheres agree within {settings.sphere_tolerance:.3g} (squared norms "
            f"{norm_a:.4g} and {norm_b:.4g}, relative gap {gap:.3g}); M2O not needed"
        )
        return SpherePlan(start, names, gap, False, reason)
    reason = (
        f"mode {start.upper()} is on the larger sphere (squared norm {larger:.4g} vs "
        f"{smaller:.4g}, relative gap {gap:.3g})"
    )
    return SpherePlan(start, names, gap, True, reason)


def find_m2o_path(
    model: nn.Module,
    start: dict[str, Tensor],
    other: dict[str, Tensor],
    data: ImageData,
    settings: M2OSettings,
    sink: PathSink,
    seed: int,
    evaluation: EvaluationSettings | None = None,
    resume: dict[str, Any] | None = None,
) -> StageOutcome:
    """Run Algorithm 2 from `start` until its layers reach `other`'s variance sphere.

    `start`/`other` are full state dicts; `data` is on the model's device. Returns the stored
    path points (first = `start`, last = the point I on the other mode's sphere from which M2M
    continues). Raises NonFiniteLossError if training diverges.
    """
    begun = time.perf_counter()
    evaluation = evaluation or EvaluationSettings()
    device = data.device
    model.load_state_dict(start)
    params = dict(model.named_parameters())
    names = m2o_layers(model, settings.exclude_norm, settings.exclude)
    p0 = {n: params[n].detach().clone() for n in names}
    start_variances = layer_variances(p0)
    other_variances = {n: v.to(device) for n, v in layer_variances(other, names).items()}
    destination = projection_onto_sphere(p0, other_variances)
    initial_distances = layer_distances(p0, destination, names)
    limits = {n: other_variances[n] * (1 + settings.sphere_tolerance) for n in names}
    moving = [n for n in names if bool(start_variances[n] > limits[n])]

    for name, param in params.items():
        param.requires_grad_(name in set(names))
    groups = [{"params": [params[n]], "name": n} for n in names]
    optimizer = torch.optim.SGD(
        groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    recorder = PathRecorder(
        STAGE,
        model,
        data,
        destination,
        sink,
        settings.store_interval,
        settings.eval_interval,
        evaluation,
        settings.iterations,
    )
    batches = BatchStream(data, settings.batch_size, seed=seed, augment=settings.augment)
    rolling = RollingLoss(settings.rolling_window)
    clock = StageClock()
    iteration, total_rounds = 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        batches.load_state_dict(resume["batches"])
        rolling.load_state_dict(resume["rolling"], device)
        iteration, total_rounds = int(resume["iteration"]), int(resume["total_rounds"])
        recorder.load_state_dict(resume["recorder"], iteration)
        moving = list(resume["moving"])
        logger.info(
            "M2O resumes at iteration %d with %d layers still moving", iteration, len(moving)
        )
    else:
        recorder.record(0, 0, "toward origin", 0, None, force=True)

    while moving and iteration < settings.iterations:
        move(params, destination, initial_distances, settings, moving)
        _angle_conformal(optimizer, settings.lr, params, start_variances)
        with clock("train"):
            rounds, loss = train_rounds(
                model, optimizer, batches, rolling, settings, f"M2O iteration {iteration + 1}"
            )
        iteration, total_rounds = iteration + 1, total_rounds + rounds
        moving = _still_moving(params, moving, limits)

        last = not moving or iteration == settings.iterations
        with clock("record"):
            recorder.record(iteration, 0, "toward origin", rounds, loss, force=last)
        if iteration % settings.checkpoint_interval == 0 and not last:
            sink.checkpoint(
                STAGE,
                iteration,
                {
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "batches": batches.state_dict(),
                    "rolling": rolling.state_dict(),
                    "recorder": recorder.state_dict(),
                    "iteration": iteration,
                    "total_rounds": total_rounds,
                    "moving": moving,
                },
            )

    info = {
        "layers": len(names),
        "layers_not_reached": moving,
        "seconds": clock.seconds,
        "train_samples": total_rounds * batches.batch_size,
    }
    if moving:
        logger.warning(
            "M2O stopped after %d iterations with %d of %d layers still above the destination "
            "sphere (%s); M2M will start from a point off that sphere. Raise m2o.iterations or "
            "the step sizes.",
            iteration,
            len(moving),
            len(names),
            ", ".join(moving[:5]),
        )
    for param in params.values():
        param.requires_grad_(True)
    return StageOutcome(
        stage=STAGE,
        points=recorder.points,
        iterations=iteration,
        total_rounds=total_rounds,
        wall_seconds=time.perf_counter() - begun,
        info=info,
    )


def _angle_conformal(
    optimizer: torch.optim.Optimizer,
    base_lr: float,
    params: dict[str, Tensor],
    start_variances: dict[str, Tensor],
) -> None:
    """Set each layer's learning rate to `base_lr * Var(N_l) / Var(P0_l)` (one host sync)."""
    names = [group["name"] for group in optimizer.param_groups]
    current = layer_variances(params, names)
    rates = torch.stack(
        [angle_conformal_lr(base_lr, current[n], start_variances[n]) for n in names]
    ).tolist()
    for group, rate in zip(optimizer.param_groups, rates, strict=False):
        group["lr"] = rate


def _still_moving(
    params: dict[str, Tensor], moving: list[str], limits: dict[str, Tensor]
) -> list[str]:
    """The layers whose variance is still above their destination sphere (with tolerance)."""
    if not moving:
        return moving
    variances = layer_variances(params, moving)
    above = torch.stack([variances[n] > limits[n] for n in moving]).tolist()
    return [name for name, is_above in zip(moving, above, strict=False) if is_above]
