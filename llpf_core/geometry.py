"""Parameter-space geometry of LLPF: Move, VarianceCorrection, AngleConformal, distances.

A *point* is a mapping from parameter name to tensor; a *layer* is one named parameter tensor
(`conv1.weight`, `bn1.bias`), matching the paper's per-layer variance spheres (Eq. 2). All
arithmetic is on whole layer tensors and stays on their device: nothing here reads a value back
to the host, so a caller decides when to synchronise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from llpf_core.settings import StepSizes

Point = Mapping[str, Tensor]


def is_scalable(tensor: Tensor) -> bool:
    """Whether VarianceCorrection applies: a floating tensor with more than one element.

    Single-element tensors have no variance to correct, and integer buffers (BatchNorm's
    `num_batches_tracked`) are counters, not weights.
    """
    return tensor.is_floating_point() and tensor.numel() > 1


def layer_variance(tensor: Tensor) -> Tensor:
    """Population variance of a layer's values, Alg. 1 line 21 (divides by n). 0-d tensor."""
    return (
        tensor.detach().float().var(unbiased=False) if tensor.numel() > 1 else tensor.new_zeros(())
    )


def layer_variances(point: Point, names: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Per-layer variance `Var(theta_l)` (Eq. 2) of the selected layers, as 0-d tensors."""
    names = point.keys() if names is None else names
    return {name: layer_variance(point[name]) for name in names}


def layer_distances(point: Point, destination: Point, names: Iterable[str]) -> dict[str, Tensor]:
    """Per-layer L2 distance `|P_l D_l|`, as 0-d tensors."""
    return {name: torch.linalg.vector_norm(destination[name] - point[name]) for name in names}


def total_distance(distances: Mapping[str, Tensor]) -> Tensor:
    """L2 distance over all given layers: sqrt of the sum of squared layer distances."""
    if not distances:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(list(distances.values())))


@torch.no_grad()
def move(
    point: dict[str, Tensor],
    destination: Point,
    initial_distances: Mapping[str, Tensor],
    steps: StepSizes,
    names: Iterable[str],
) -> None:
    """Move each named layer of `point` toward `destination`, in place (Alg. 1 lines 13-16).

    The step is a length along the unit direction from P_i to D, per layer:
    `step = step_a*|P_iD| + step_c*|P_0D| + step_f`, where `initial_distances` holds `|P_0D|`.
    A layer whose step reaches or passes D lands exactly on D: Move never overshoots. The paper
    writes `M_1 = P_i + step * P_iD`; read with a unit direction, `step_f` is a length and
    `step_a` a fraction of the remaining distance, which is what its Tables 2-3 values imply.
    """
    for name in names:
        current, target = point[name], destination[name]
        offset = target - current
        distance = torch.linalg.vector_norm(offset)
        step = steps.step_a * distance + steps.step_c * initial_distances[name] + steps.step_f
        arrives = step >= distance
        fraction = torch.where(arrives, torch.ones_like(distance), step / distance.clamp_min(1e-30))
        moved = current + fraction.to(current.dtype) * offset
        current.copy_(torch.where(arrives, target, moved))


@torch.no_grad()
def variance_correction(
    point: dict[str, Tensor], target_variances: Mapping[str, Tensor], names: Iterable[str]
) -> None:
    """Rescale each named layer about its mean to its target variance, in place (Alg. 1 l. 19-26).

    `W' = mean(W) + sqrt(v / Var(W)) * (W - mean(W))`: the mean is kept and the variance becomes
    `v`. Layers that are not scalable (see `is_scalable`) and layers with zero variance (nothing
    to rescale; all values equal) are left alone.
    """
    for name in names:
        weights = point[name]
        if not is_scalable(weights):
            continue
        mean = weights.mean()
        variance = weights.var(unbiased=False)
        scale = torch.where(
            variance > 0,
            torch.sqrt(target_variances[name].to(variance.dtype) / variance.clamp_min(1e-30)),
            torch.ones_like(variance),
        )
        weights.copy_(mean + scale * (weights - mean))


def angle_conformal_lr(base_lr: float, current_variance: Tensor, start_variance: Tensor) -> Tensor:
    """AngleConformal (Alg. 2 lines 12-16): `eta = eta_base * w / v`, per layer.

    `w` is the layer's variance now and `v` its variance at the start of M2O. Shrinking the
    learning rate with the variance keeps the angle of an update step roughly constant as the
    point approaches the origin. A layer whose start variance is 0 keeps the base rate.
    """
    ratio = torch.where(start_variance > 0, current_variance / start_variance.clamp_min(1e-30), 1.0)
    return base_lr * ratio


def projection_onto_sphere(
    point: Point, target_variances: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Radial projection of each layer onto the sphere `Var = v` (Eq. 6: centred at the origin).

    Returns `P_l * sqrt(v_l / Var(P_l))` per layer, a point on the ray from the origin through
    P; this is M2O's destination when it connects two modes on different spheres (section 5).
    Non-scalable layers are copied unchanged.
    """
    projected = {}
    for name, weights in point.items():
        if not is_scalable(weights) or name not in target_variances:
            projected[name] = weights.detach().clone()
            continue
        variance = layer_variance(weights)
        scale = torch.where(
            variance > 0, torch.sqrt(target_variances[name] / variance.clamp_min(1e-30)), 1.0
        )
        projected[name] = weights.detach() * scale.to(weights.dtype)
    return projected


def interpolate(start: Point, end: Point, alpha: float) -> dict[str, Tensor]:
    """`(1 - alpha) * start + alpha * end` for floating tensors; integers are taken from `start`."""
    result = {}
    for name, value in start.items():
        if value.is_floating_point():
            result[name] = torch.lerp(value, end[name].to(value.device), alpha)
        else:
            result[name] = value.clone()
    return result
