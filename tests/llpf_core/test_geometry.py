"""Hand-checked values for Move, VarianceCorrection, AngleConformal and the sphere projection."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from llpf_core.geometry import (
    angle_conformal_lr,
    interpolate,
    layer_distances,
    layer_variance,
    move,
    projection_onto_sphere,
    total_distance,
    variance_correction,
)
from llpf_core.settings import StepSizes


def _points():
    # P_0 = P_i = (0, 0), D = (3, 4): |P_iD| = 5, unit direction (0.6, 0.8).
    point = {"w": torch.tensor([0.0, 0.0])}
    destination = {"w": torch.tensor([3.0, 4.0])}
    initial = layer_distances(point, destination, ["w"])
    return point, destination, initial


def test_move_step_f_is_a_fixed_length_along_the_unit_direction():
    point, destination, initial = _points()
    move(point, destination, initial, StepSizes(step_f=1.0), ["w"])
    assert torch.allclose(point["w"], torch.tensor([0.6, 0.8]))


def test_move_step_a_is_a_share_of_the_current_distance():
    point, destination, initial = _points()
    move(point, destination, initial, StepSizes(step_a=0.1), ["w"])  # 0.1 * 5 = 0.5
    assert torch.allclose(point["w"], torch.tensor([0.3, 0.4]))
    move(point, destination, initial, StepSizes(step_a=0.1), ["w"])  # 0.1 * 4.5 = 0.45
    assert torch.allclose(point["w"], torch.tensor([0.3 + 0.27, 0.4 + 0.36]))


def test_move_step_c_is_a_share_of_the_initial_distance():
    point, destination, initial = _points()
    for _ in range(2):  # each step is 0.2 * |P_0D| = 1.0, whatever |P_iD| has become
        move(point, destination, initial, StepSizes(step_c=0.2), ["w"])
    assert torch.allclose(point["w"], torch.tensor([1.2, 1.6]))


def test_move_sums_the_three_step_terms():
    point, destination, initial = _points()
    move(point, destination, initial, StepSizes(step_f=0.5, step_a=0.1, step_c=0.1), ["w"])
    assert torch.allclose(point["w"], 1.5 * torch.tensor([0.6, 0.8]))  # 0.5 + 0.5 + 0.5


def test_move_never_overshoots_and_lands_exactly_on_the_destination():
    point, destination, initial = _points()
    move(point, destination, initial, StepSizes(step_f=7.0), ["w"])
    assert torch.equal(point["w"], destination["w"])
    move(point, destination, initial, StepSizes(step_f=1.0), ["w"])  # already there
    assert torch.equal(point["w"], destination["w"])


def test_move_is_per_layer_and_leaves_unnamed_layers_alone():
    point = {"a": torch.zeros(2), "b": torch.zeros(3)}
    destination = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([0.0, 0.0, 10.0])}
    initial = layer_distances(point, destination, ["a", "b"])
    move(point, destination, initial, StepSizes(step_f=1.0), ["a"])
    assert torch.allclose(point["a"], torch.tensor([0.6, 0.8]))
    assert torch.equal(point["b"], torch.zeros(3))
    move(point, destination, initial, StepSizes(step_f=1.0), ["b"])
    assert torch.allclose(point["b"], torch.tensor([0.0, 0.0, 1.0]))  # 1.0 along its own axis


def test_step_sizes_reject_a_move_that_cannot_move():
    with pytest.raises(ValidationError, match="would never move"):
        StepSizes()


def test_variance_correction_reaches_the_target_and_keeps_the_mean():
    weights = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, population variance 3.5
    point = {"w": weights.clone()}
    variance_correction(point, {"w": torch.tensor(14.0)}, ["w"])  # scale sqrt(14/3.5) = 2
    assert torch.allclose(point["w"], torch.tensor([-1.0, 1.0, 3.0, 9.0]))
    assert point["w"].mean().item() == pytest.approx(3.0)
    assert layer_variance(point["w"]).item() == pytest.approx(14.0)


def test_variance_correction_leaves_scalars_integers_and_constant_layers_alone():
    point = {
        "scalar": torch.tensor([0.5]),
        "counter": torch.tensor([3, 5, 7]),
        "constant": torch.full((4,), 2.0),
    }
    targets = {name: torch.tensor(9.0) for name in point}
    variance_correction(point, targets, list(point))
    assert torch.equal(point["scalar"], torch.tensor([0.5]))
    assert torch.equal(point["counter"], torch.tensor([3, 5, 7]))
    assert torch.equal(point["constant"], torch.full((4,), 2.0))


def test_angle_conformal_scales_the_learning_rate_by_the_variance_ratio():
    rate = angle_conformal_lr(0.1, torch.tensor(0.5), torch.tensor(2.0))
    assert rate.item() == pytest.approx(0.025)  # eta_base * w / v
    unchanged = angle_conformal_lr(0.1, torch.tensor(0.5), torch.tensor(0.0))
    assert unchanged.item() == pytest.approx(0.1)


def test_projection_onto_sphere_is_radial_and_reaches_the_variance():
    point = {"w": torch.tensor([1.0, -1.0, 2.0, 4.0]), "s": torch.tensor([3.0])}
    target = layer_variance(point["w"]) / 4
    projected = projection_onto_sphere(point, {"w": target})
    assert torch.allclose(projected["w"], point["w"] / 2)  # on the ray through the origin
    assert layer_variance(projected["w"]).item() == pytest.approx(target.item())
    assert torch.equal(projected["s"], point["s"])


def test_distances_and_interpolation():
    start = {"a": torch.tensor([0.0, 0.0]), "n": torch.tensor(4)}
    end = {"a": torch.tensor([3.0, 4.0]), "n": torch.tensor(9)}
    distances = layer_distances(start, end, ["a"])
    assert distances["a"].item() == pytest.approx(5.0)
    assert total_distance({"x": torch.tensor(3.0), "y": torch.tensor(4.0)}).item() == 5.0
    middle = interpolate(start, end, 0.5)
    assert torch.allclose(middle["a"], torch.tensor([1.5, 2.0]))
    assert middle["n"].item() == 4  # integer buffers are taken from the start
    assert math.isclose(total_distance({}).item(), 0.0)
