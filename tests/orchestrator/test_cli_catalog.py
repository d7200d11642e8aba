"""`llpf models` and `llpf phases`: the catalogue of architectures and their M2M schedules.

Each command runs in-process through Typer's CliRunner; nothing touches a database or Ray.
Building every architecture once for `llpf models` is the slowest part (seconds on one core).
"""

from __future__ import annotations

import itertools
import json
import logging

import pytest
from click.testing import Result
from typer.testing import CliRunner

from llpf_core.models import architecture_names, build_model, get_arch
from llpf_core.presets import preset_names
from orchestrator import cli

# name -> (trainable parameters for 10 classes, default recipe, default preset), for each
# architecture's default dataset (digits for LeNet-5, CIFAR-10 for the others).
CATALOGUE: dict[str, tuple[int, str, str]] = {
    "lenet5": (61_706, "lenet5-digits", "lenet5-digits"),
    "resnet18": (11_173_962, "resnet18-cifar10", "resnet18"),
    "vgg11": (9_231_114, "vgg11-cifar10", "fdf"),
    "densenet": (6_956_298, "densenet-cifar10", "fdf"),
    "efficientnet_b0": (3_599_686, "efficientnet_b0-cifar10", "fdf"),
    "mobilenet_v2": (2_237_770, "mobilenet_v2-cifar10", "fdf"),
    "regnet_x_200mf": (2_321_946, "regnet_x_200mf-cifar10", "fdf"),
    "shufflenet_v2": (960_706, "shufflenet_v2-cifar10", "fdf"),
    "dla": (16_291_386, "dla-cifar10", "dla"),
    "cct7": (3_760_139, "cct7-cifar10", "cct7"),
}

# Table 2, ResNet18@CIFAR10: T and step_a of phases 1-6, and phase 2's layers.
RESNET18_ITERATIONS = [10000, 5000, 5000, 5000, 5000, 5000]
RESNET18_STEP_A = [5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3]
RESNET18_STEM_AND_HEAD = ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]

LOGGERS = ("", "llpf_core", "workers", "orchestrator")


@pytest.fixture(autouse=True)
def restored_logging():
    """Undo the handlers and levels the CLI's callback installs on the root logger."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(logger.handlers[:], logger.level) for logger in loggers]
    yield
    for logger, (handlers, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli.app, list(args))


def phases_json(runner: CliRunner, arch: str) -> dict:
    result = invoke(runner, "phases", "--arch", arch, "--format", "json")
    assert result.exit_code == 0, result.output
    (listing,) = json.loads(result.stdout)
    return listing


def parameter_names(arch: str) -> list[str]:
    return [name for name, _ in build_model(arch, num_classes=10).named_parameters()]


def test_models_json_lists_every_architecture(runner):
    result = invoke(runner, "models", "--format", "json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == architecture_names()
    assert sorted(row["name"] for row in rows) == sorted(CATALOGUE)
    for row in rows:
        params, recipe, preset = CATALOGUE[row["name"]]
        assert {"name", "params", "datasets", "recipe", "preset"} <= set(row)
        assert (row["params"], row["recipe"], row["preset"]) == (params, recipe, preset), row
        assert row["datasets"] == list(get_arch(row["name"]).datasets)


def test_models_table_shows_every_architecture(runner):
    # piped output (as under CliRunner) is laid out wide enough that no cell is cut short
    result = invoke(runner, "models")

    assert result.exit_code == 0, result.output
    assert "architectures" in result.stdout
    for name, (params, recipe, _) in CATALOGUE.items():
        assert name in result.stdout
        assert f"{params:,}" in result.stdout
        assert recipe in result.stdout


@pytest.mark.parametrize(
    ("arch", "title", "last"),
    [
        ("resnet18", "resnet18: preset resnet18", "Phase 6: all layers"),
        ("mobilenet_v2", "mobilenet_v2: preset fdf", "Phase 20: all layers"),
    ],
)
def test_phases_table_for_a_preset_and_a_derived_schedule(runner, arch, title, last):
    result = invoke(runner, "phases", "--arch", arch)

    assert result.exit_code == 0, result.output
    assert title in result.stdout
    assert "Phase 1:" in result.stdout
    assert last in result.stdout


def test_phases_json_of_the_resnet18_preset_follow_table_2(runner):
    listing = phases_json(runner, "resnet18")

    assert (listing["arch"], listing["preset"]) == ("resnet18", "resnet18")
    phases = listing["phases"]
    assert [p["iterations"] for p in phases] == RESNET18_ITERATIONS
    assert [p["step_a"] for p in phases] == RESNET18_STEP_A
    assert all(p["step_f"] == 0 and p["step_c"] == 0 for p in phases)
    assert phases[1]["parameters"] == RESNET18_STEM_AND_HEAD

    # phases 2-5 add one residual stage each
    for previous, phase, stage in zip(
        phases[1:4], phases[2:5], ("layer1", "layer2", "layer3"), strict=True
    ):
        added = set(phase["parameters"]) - set(previous["parameters"])
        assert set(previous["parameters"]) < set(phase["parameters"])
        assert added and all(name.startswith(f"{stage}.") for name in added)


def test_phases_json_of_a_derived_fdf_schedule(runner):
    listing = phases_json(runner, "mobilenet_v2")

    assert (listing["arch"], listing["preset"]) == ("mobilenet_v2", "fdf")
    phases = listing["phases"]
    assert len(phases) == 20
    assert phases[0]["parameters"] == ["conv0.weight", "bn0.weight", "bn0.bias"]
    for phase in phases:
        assert phase["iterations"] == 400
        assert (phase["step_f"], phase["step_a"], phase["step_c"]) == (0.0, 1e-3, 2e-3)
        assert phase["parameter_count"] == len(phase["parameters"])

    # cumulative: each phase adds layer groups to the one before
    for previous, phase in itertools.pairwise(phases):
        assert set(previous["parameters"]) < set(phase["parameters"])


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_every_parameter_is_in_the_last_phase(runner, arch):
    phases = phases_json(runner, arch)["phases"]

    assert phases[-1]["groups"] == ["*"]
    assert phases[-1]["parameters"] == parameter_names(arch)


def test_phases_of_an_unknown_architecture_name_the_valid_ones(runner):
    result = invoke(runner, "phases", "--arch", "nope")

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "unknown architecture 'nope'" in lines[0]
    assert all(name in lines[0] for name in architecture_names())
    # the message is the registry's own, not pydantic's report around it
    assert "validation error" not in lines[0]
    assert "errors.pydantic.dev" not in lines[0]


def test_phases_with_an_unknown_preset_name_the_valid_ones(runner):
    result = invoke(runner, "phases", "--arch", "resnet18", "--preset", "nope")

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown preset 'nope'" in lines[0]
    assert f"valid presets: {', '.join(preset_names())}" in lines[0]
