"""Named presets against the paper's Tables 2 and 3 (appendix A.5) and their architectures.

Each preset's numbers are spot-checked against the tables; its phases are checked on the real
architecture: every pattern selects parameters, and phases the paper builds as "Phase k-1 + ..."
select a strict superset of the phase before.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from llpf_core.models import architecture_names, build_model, get_arch
from llpf_core.phases import matches, phase_layers
from llpf_core.presets import PRESETS, get_preset, preset_names, resolve_phases
from llpf_core.settings import PhaseSpec

# The architecture whose parameter names each preset's patterns address.
PRESET_ARCHITECTURE: dict[str, str] = {
    "lenet5": "lenet5",
    "lenet5-digits": "lenet5",
    "resnet18": "resnet18",
    "cct7": "cct7",
    "cct7-fdf": "cct7",
    "dla": "dla",
}

# Phases k..l of Table 2 that are built as "Phase k-1 + ..." (1-based, inclusive).
CUMULATIVE_PHASES: dict[str, tuple[int, int]] = {
    "resnet18": (3, 5),
    "cct7": (2, 7),
    "cct7-fdf": (2, 8),
    "dla": (2, 20),
}


@functools.cache
def model_of(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch)


def require(arch: str) -> nn.Module:
    if arch not in architecture_names():
        pytest.skip(f"architecture {arch!r} is not registered (yet)")
    return model_of(arch)


def steps(phase: PhaseSpec) -> tuple[float, float, float]:
    return (phase.step_a, phase.step_c, phase.step_f)


def test_every_table_preset_is_registered():
    assert set(preset_names()) == {*PRESET_ARCHITECTURE, "fdf"}
    for name in preset_names():
        assert get_preset(name).name == name


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown preset 'resnet50'.*cct7-fdf.*resnet18"):
        get_preset("resnet50")


def test_resnet18_matches_tables_2_and_3():
    preset = get_preset("resnet18")
    m2m, phases = preset.m2m, preset.m2m.phases

    assert len(phases) == 6
    assert (phases[0].layers, phases[0].iterations, steps(phases[0])) == (
        ["*"],
        10000,
        (5e-4, 0, 0),
    )
    assert phases[1].layers == ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
    assert phases[4].layers[-3:] == ["layer1.*", "layer2.*", "layer3.*"]
    assert (phases[5].layers, phases[5].iterations, steps(phases[5])) == (["*"], 5000, (1e-3, 0, 0))
    assert all(p.iterations == 5000 and p.step_a == 1e-3 for p in phases[1:])
    assert (m2m.lr, m2m.momentum, m2m.batch_size) == (1e-3, 0.0, 256)
    assert (m2m.loss_threshold, m2m.max_rounds, m2m.rolling_window) == (0.04, 200, 10)

    m2o = preset.m2o
    assert (m2o.iterations, m2o.loss_threshold, m2o.max_rounds, m2o.batch_size) == (
        1400,
        0.02,
        5000,
        256,
    )
    assert (m2o.step_a, m2o.step_c, m2o.step_f, m2o.exclude_norm) == (1e-3, 0, 0, True)


def test_cct7_matches_tables_2_and_3():
    preset = get_preset("cct7")
    m2m, phases = preset.m2m, preset.m2m.phases

    assert len(phases) == 8
    assert phases[0].layers == ["tokenizer.conv_layers", "classifier"]
    assert phases[0].exclude == ["classifier.blocks"]
    assert phases[6].layers[-1] == "classifier.blocks.5.*"
    assert phases[6].exclude == ["classifier.blocks.6"]
    assert phases[7].layers == ["*"]
    assert all(p.iterations == 5000 and steps(p) == (1e-3, 0, 1e-3) for p in phases)
    assert (m2m.loss_threshold, m2m.max_rounds, m2m.batch_size, m2m.lr) == (0.05, 10000, 128, 1e-3)

    m2o = preset.m2o
    assert (m2o.iterations, m2o.loss_threshold, m2o.max_rounds, m2o.batch_size) == (
        1000,
        0.05,
        5000,
        128,
    )
    assert (m2o.step_a, m2o.step_c, m2o.exclude_norm) == (1e-3, 0, True)


def test_cct7_fdf_matches_table_2():
    preset = get_preset("cct7-fdf")
    m2m, phases = preset.m2m, preset.m2m.phases

    assert len(phases) == 9
    assert phases[0].layers == [
        "tokenizer.conv_layers",
        "classifier.positional_emb",
        "classifier.attention_pool",
    ]
    # the paper's "Phase 8 Phase 6 + blocks.6" read as Phase 7 + blocks.6
    assert phases[7].layers == phases[6].layers + ["classifier.blocks.6.*"]
    assert [p.iterations for p in phases] == [500] * 8 + [1000]
    assert all(steps(p) == (2e-3, 2e-3, 0) for p in phases)
    assert (m2m.loss_threshold, m2m.max_rounds, m2m.batch_size, m2m.momentum) == (
        0.05,
        1000,
        128,
        0,
    )
    assert preset.m2o == get_preset("cct7").m2o  # Table 3 has one CCT7 row


def test_dla_matches_tables_2_and_3():
    preset = get_preset("dla")
    m2m, phases = preset.m2m, preset.m2m.phases

    assert len(phases) == 21
    assert phases[0].layers == ["base.0.*"]
    assert phases[4].layers[-1] == "layer3.left_node.*"
    assert phases[7].layers[-1] == "layer4.prev_root.*"
    assert phases[8].layers[-1] == "layer4.level_1.*"
    assert phases[17].layers[-1] == "layer6.left_node.*"
    assert phases[19].layers[-1] == "layer6.root.*"
    assert phases[20].layers == ["*"]
    assert all(p.iterations == 400 and steps(p) == (1e-3, 2e-3, 0) for p in phases)
    assert (m2m.loss_threshold, m2m.max_rounds, m2m.batch_size, m2m.lr) == (0.005, 1000, 128, 1e-3)

    m2o = preset.m2o
    assert (m2o.iterations, m2o.loss_threshold, m2o.max_rounds, m2o.batch_size) == (
        1000,
        0.005,
        1000,
        128,
    )
    assert (m2o.step_a, m2o.step_c, m2o.exclude_norm) == (5e-4, 1e-3, True)


def test_fdf_preset_derives_phases():
    preset = get_preset("fdf")

    assert preset.m2m.phases is None
    assert (preset.m2m.lr, preset.m2m.momentum, preset.m2m.batch_size) == (1e-3, 0, 128)
    assert (preset.m2m.loss_threshold, preset.m2m.max_rounds) == (0.05, 1000)
    assert (preset.fdf_iterations_per_phase, preset.fdf_final_iterations) == (400, 400)
    assert (preset.fdf_steps.step_a, preset.fdf_steps.step_c, preset.fdf_steps.step_f) == (
        1e-3,
        2e-3,
        0,
    )
    assert (preset.m2o.iterations, preset.m2o.batch_size, preset.m2o.exclude_norm) == (
        1000,
        128,
        True,
    )


def test_resolve_phases_prefers_the_preset_and_otherwise_derives():
    model = require("resnet18")

    assert resolve_phases(model, get_preset("resnet18"), (3, 32, 32)) == (
        get_preset("resnet18").m2m.phases
    )

    derived = resolve_phases(model, get_preset("fdf"), (3, 32, 32))
    assert [p.name for p in derived][:2] == ["Phase 1: conv1+bn1", "Phase 2: + layer1"]
    assert all(p.iterations == 400 and steps(p) == (1e-3, 2e-3, 0) for p in derived)


@pytest.mark.parametrize("name", sorted(PRESET_ARCHITECTURE))
def test_every_pattern_addresses_parameters_of_its_architecture(name):
    model = require(PRESET_ARCHITECTURE[name])
    names = [n for n, _ in model.named_parameters()]

    for phase in PRESETS[name].m2m.phases:
        assert phase_layers(model, phase)  # raises for a layer pattern that matches nothing
        for pattern in phase.exclude + PRESETS[name].m2o.exclude:
            assert any(matches(n, pattern) for n in names), f"{phase.name}: {pattern!r}"
    assert phase_layers(model, PRESETS[name].m2m.phases[-1]) == names  # ends with all layers


@pytest.mark.parametrize("name", sorted(CUMULATIVE_PHASES))
def test_cumulative_phases_select_growing_sets(name):
    model = require(PRESET_ARCHITECTURE[name])
    phases = PRESETS[name].m2m.phases
    first, last = CUMULATIVE_PHASES[name]

    for k in range(first, last + 1):
        before = set(phase_layers(model, phases[k - 2]))
        after = set(phase_layers(model, phases[k - 1]))
        assert before < after, f"{phases[k - 1].name} does not extend {phases[k - 2].name}"


def test_cct7_phase_1_leaves_out_exactly_the_blocks():
    model = require("cct7")
    selected = phase_layers(model, PRESETS["cct7"].m2m.phases[0])

    assert selected and not any(n.startswith("classifier.blocks.") for n in selected)
    assert {"classifier.fc.weight", "classifier.positional_emb"} <= set(selected)
    assert any(n.startswith("tokenizer.conv_layers.") for n in selected)


@pytest.mark.parametrize("arch", architecture_names())
def test_registered_presets_resolve_for_their_architecture(arch):
    spec = get_arch(arch)
    preset = get_preset(spec.preset or "fdf")
    model = model_of(arch)
    shape = (1, 28, 28) if arch.startswith("lenet") else (3, 32, 32)

    phases = resolve_phases(model, preset, shape)
    assert phases[-1].layers == ["*"]
    assert all(phase_layers(model, p) for p in phases)
