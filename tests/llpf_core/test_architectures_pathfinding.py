"""Every registered architecture through both path-finding algorithms, on the CPU.

For each architecture of the registry: a forward pass and a training step on a tiny synthetic
batch set, two iterations of Algorithm 1 (M2M) between two seeded initialisations in the first
phase of the architecture's own schedule (its Table 2 preset or its derived FDF phases), and one
iteration of Algorithm 2 (M2O) from an initialisation scaled up to a larger variance sphere.

Table 2's step sizes move a layer 0.05-0.2% of the way per iteration, which for a small layer
(LeNet-5's `fc2.bias`) is less than one SGD step on 8 images changes it; the tests use
step_a=0.2 so that a smaller distance (or variance) after an iteration is the doing of Move, not
of chance. tests/conftest.py seeds torch and keeps it on one thread.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from llpf_core.data.batches import BatchStream
from llpf_core.data.registry import ImageData, dataset_spec
from llpf_core.geometry import is_scalable, layer_variance
from llpf_core.m2m import find_m2m_path
from llpf_core.m2o import find_m2o_path, plan_spheres
from llpf_core.models import architecture_names, build_model, get_arch
from llpf_core.path import NullSink, PathPoint
from llpf_core.phases import m2o_layers, norm_parameter_names, phase_layers
from llpf_core.presets import get_preset, resolve_phases
from llpf_core.settings import EvaluationSettings, M2MSettings, M2OSettings, PhaseSpec
from llpf_core.training import sgd_for, train_step

ARCHITECTURES = architecture_names()
# The largest models (DLA 16M parameters, ResNet-18 11M, VGG-11 9M) and the slowest per image
# (DenseNet-121, CCT-7): they run by default, and `-m "not slow"` leaves them out.
HEAVY = {"dla", "resnet18", "vgg11", "densenet", "cct7"}
ARCH_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name for name in ARCHITECTURES
]

TRAIN_IMAGES = 16
TEST_IMAGES = 8
BATCH_SIZE = 8
STEP_A = 0.2  # share of the remaining distance Move covers per iteration (see module docstring)
M2O_SCALE = 1.5  # the M2O start: mode A with every non-norm layer scaled by this
EVALUATION = EvaluationSettings(norm_recalibration_batches=1, batch_size=16)
# one training batch per iteration; every iterate stored and evaluated
SHORT_STAGE = {"max_rounds": 1, "batch_size": BATCH_SIZE, "store_interval": 1, "eval_interval": 1}


class KeepingSink(NullSink):
    """A sink that keeps a copy of every stored point's state dict, by (stage, iteration)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, int], dict[str, Tensor]] = {}

    def store_weights(self, stage: str, iteration: int, state: dict[str, Tensor]) -> str:
        self.states[(stage, iteration)] = {k: v.detach().clone() for k, v in state.items()}
        return f"memory://{stage}/{iteration}"


def default_dataset(arch: str) -> str:
    return get_arch(arch).datasets[0]


def synthetic_data(arch: str) -> ImageData:
    """Random images of the architecture's default dataset's shape, with random labels."""
    spec = dataset_spec(default_dataset(arch))
    generator = torch.Generator().manual_seed(7)
    channels = spec.input_shape[0]
    return ImageData(
        name=f"synthetic-{spec.name}",
        train_x=torch.rand((TRAIN_IMAGES, *spec.input_shape), generator=generator),
        train_y=torch.randint(0, spec.num_classes, (TRAIN_IMAGES,), generator=generator),
        test_x=torch.rand((TEST_IMAGES, *spec.input_shape), generator=generator),
        test_y=torch.randint(0, spec.num_classes, (TEST_IMAGES,), generator=generator),
        num_classes=spec.num_classes,
        augmentation="mnist" if channels == 1 else "cifar",
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )


def seeded_model(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(arch, num_classes=dataset_spec(default_dataset(arch)).num_classes)


def state_of(model: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def preset_of(arch: str):
    return get_preset(get_arch(arch).preset_for(default_dataset(arch)) or "fdf")


def first_phase(arch: str, model: nn.Module) -> PhaseSpec:
    """The first phase of the architecture's schedule, cut to 2 iterations with larger steps."""
    data_shape = dataset_spec(default_dataset(arch)).input_shape
    phase = resolve_phases(model, preset_of(arch), data_shape)[0]
    return PhaseSpec(
        name=phase.name,
        layers=phase.layers,
        exclude=phase.exclude,
        iterations=2,
        step_a=STEP_A,
    )


def assert_finite_losses(points: list[PathPoint]) -> None:
    for point in points:
        for value in (point.train_loss, point.test_loss):
            assert value is not None and math.isfinite(value), point
        if point.iteration > 0 and not point.is_destination:
            assert point.rolling_loss is not None and math.isfinite(point.rolling_loss), point


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_parameter_names_are_stable_across_constructions(arch):
    first, second = seeded_model(arch, 1), seeded_model(arch, 2)

    assert [n for n, _ in first.named_parameters()] == [n for n, _ in second.named_parameters()]
    assert list(first.state_dict()) == list(second.state_dict())
    differ = [
        name
        for (name, a), (_, b) in zip(
            first.named_parameters(), second.named_parameters(), strict=True
        )
        if not torch.equal(a, b)
    ]
    assert differ, "two seeds gave identical weights"


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_forward_and_one_training_step(arch):
    data = synthetic_data(arch)
    model = seeded_model(arch, 1)

    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(data.train_x))
    assert logits.shape == (TRAIN_IMAGES, data.num_classes)
    assert torch.isfinite(logits).all()

    # one step on an augmented, normalised batch, as Train^r takes it
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    batch = BatchStream(data, BATCH_SIZE, seed=0).next()
    assert batch[0].shape == (BATCH_SIZE, *data.input_shape)
    loss = train_step(model, sgd_for(model.parameters(), M2MSettings(lr=0.01)), batch)

    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > len(before) // 2


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_two_m2m_iterations_between_two_initialisations(arch):
    data = synthetic_data(arch)
    model = seeded_model(arch, 1)
    start, destination = state_of(model), state_of(seeded_model(arch, 2))
    phase = first_phase(arch, model)
    applied = phase_layers(model, phase)
    settings = M2MSettings.model_validate(
        {**preset_of(arch).m2m.model_dump(), "phases": None, **SHORT_STAGE}
    )
    sink = KeepingSink()

    outcome = find_m2m_path(
        model, start, destination, data, settings, [phase], sink, seed=0, evaluation=EVALUATION
    )

    # P_0, P_1, P_2, then D itself; one training batch per iteration (max_rounds=1)
    points = outcome.points
    assert [p.iteration for p in points] == [0, 1, 2, 3]
    assert [p.is_destination for p in points] == [False, False, False, True]
    assert (outcome.iterations, outcome.total_rounds) == (2, 2)
    assert [p.rounds for p in points] == [0, 1, 1, 0]
    assert_finite_losses(points)

    # the path ends exactly at the destination mode, buffers included
    last = sink.states[("m2m", 3)]
    assert list(last) == list(destination)
    for name, value in destination.items():
        assert torch.equal(last[name], value), name
    assert points[-1].total_distance == 0.0

    # Move brings every applied layer that started apart from D closer in each iteration
    apart = [n for n in applied if points[0].layer_distances[n] > 0]
    assert apart, f"{phase.name}: no applied layer differs between the two initialisations"
    for name in apart:
        assert points[2].layer_distances[name] < points[1].layer_distances[name], name
        assert points[1].layer_distances[name] < points[0].layer_distances[name], name

    # VarianceCorrection keeps the applied layers on P_0's spheres; the others do not move
    for iteration in (1, 2):
        state = sink.states[("m2m", iteration)]
        for name in applied:
            if is_scalable(start[name]):
                torch.testing.assert_close(
                    layer_variance(state[name]),
                    layer_variance(start[name]),
                    rtol=1e-3,
                    atol=1e-9,
                    msg=f"{name} at iteration {iteration}",
                )
        for name, _ in model.named_parameters():
            if name not in applied:
                assert torch.equal(state[name], start[name]), name


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_one_m2o_iteration_from_a_larger_sphere(arch):
    data = synthetic_data(arch)
    model = seeded_model(arch, 1)
    other = state_of(seeded_model(arch, 2))
    settings = M2OSettings.model_validate(
        {
            **preset_of(arch).m2o.model_dump(),
            **SHORT_STAGE,
            "iterations": 1,
            "exclude_norm": True,
            "step_a": STEP_A,
            "step_c": 0.0,
            "step_f": 0.0,
        }
    )
    applied = m2o_layers(model, exclude_norm=True, exclude=[])
    norms = norm_parameter_names(model)
    start = state_of(model)
    for name in applied:
        start[name] = start[name] * M2O_SCALE
    sink = KeepingSink()

    plan = plan_spheres(model, start, other, settings)
    assert plan.needed and plan.start == "a"
    assert plan.layers == applied
    assert not set(applied) & norms
    if arch != "lenet5":
        assert norms, "a CIFAR architecture without normalization layers"

    outcome = find_m2o_path(
        model, start, other, data, settings, sink, seed=0, evaluation=EVALUATION
    )

    points = outcome.points
    assert [p.iteration for p in points] == [0, 1]
    assert not any(p.is_destination for p in points)
    assert (outcome.iterations, outcome.total_rounds) == (1, 1)
    assert_finite_losses(points)
    assert points[1].total_distance < points[0].total_distance

    # the layers above the other mode's sphere moved down; norm layers were left alone
    state = sink.states[("m2o", 1)]
    limit = 1 + settings.sphere_tolerance
    moving = [n for n in applied if layer_variance(start[n]) > layer_variance(other[n]) * limit]
    assert len(moving) >= len(applied) // 2
    for name in moving:
        assert layer_variance(state[name]) < layer_variance(start[name]), name
    for name in norms:
        assert torch.equal(state[name], start[name]), name
    assert all(p.requires_grad for p in model.parameters())
