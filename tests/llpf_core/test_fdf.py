"""Follow Data Flow layer groups and phases (section 4; Table 2's FDF rows).

Every registered architecture is built once (module-scoped cache) and run forward on a batch of
2; tiny hand-made models check the grouping rule's cases. The file takes seconds on one core.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from torch import nn

from llpf_core.fdf import LayerGroup, derive_fdf_phases, layer_groups
from llpf_core.models import architecture_names, build_model
from llpf_core.phases import phase_layers
from llpf_core.settings import StepSizes

STEPS = StepSizes(step_a=1e-3, step_c=2e-3)


def input_shape(arch: str) -> tuple[int, int, int]:
    return (1, 28, 28) if arch.startswith("lenet") else (3, 32, 32)


@functools.cache
def model_of(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch)


@functools.cache
def groups_of(arch: str) -> tuple[LayerGroup, ...]:
    return tuple(layer_groups(model_of(arch), input_shape(arch)))


def require(arch: str) -> None:
    if arch not in architecture_names():
        pytest.skip(f"architecture {arch!r} is not registered (yet)")


class Branches(nn.Module):
    """Two parallel branches on the same input, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


class Stage(nn.Module):
    """Two blocks run one after the other, without being an nn.Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.second = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class TinyBranchNet(nn.Module):
    """stem -> (a | b) -> stage -> head, with a learned offset added after the stem.

    The head is registered first and the offset last, so that only the data flow can put them
    in the right order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 3)
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(4)
        self.branches = Branches()
        self.stage = Stage()
        self.unused = nn.Linear(2, 2)
        self.offset = nn.Parameter(torch.zeros(1, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x))) + self.offset
        x = self.stage(self.branches(x))
        return self.head(x.mean(dim=(2, 3)))


def test_resnet18_groups_follow_the_paper_order():
    require("resnet18")
    groups = groups_of("resnet18")

    assert [g.modules for g in groups] == [
        ("conv1", "bn1"),
        ("layer1",),
        ("layer2",),
        ("layer3",),
        ("layer4",),
        ("fc",),
    ]
    assert groups[0].parameters == ("conv1.weight", "bn1.weight", "bn1.bias")
    assert all(g.branch_of is None for g in groups)


def test_resnet18_phases_add_one_group_each():
    require("resnet18")
    phases = derive_fdf_phases(model_of("resnet18"), (3, 32, 32), 400, 1000, STEPS)

    assert [p.name for p in phases] == [
        "Phase 1: conv1+bn1",
        "Phase 2: + layer1",
        "Phase 3: + layer2",
        "Phase 4: + layer3",
        "Phase 5: + layer4",
        "Phase 6: all layers",
    ]
    assert phases[2].layers == ["conv1", "bn1", "layer1", "layer2"]
    assert phases[-1].layers == ["*"]
    assert [p.iterations for p in phases] == [400] * 5 + [1000]
    assert all((p.step_a, p.step_c, p.step_f) == (1e-3, 2e-3, 0.0) for p in phases)


def test_dla_groups_are_the_tree_children_of_table_2():
    require("dla")
    # Table 2's DLA FDF row splits the stem into base.0 and base.1 and never adds `linear` on its
    # own; the derived rule keeps the Sequential `base` whole and ends with `linear`.
    trees = [
        f"{tree}.{child}"
        for tree, children in [
            ("layer3", ["left_node", "right_node", "root"]),
            ("layer4", ["prev_root", "level_1", "left_node", "right_node", "root"]),
            ("layer5", ["prev_root", "level_1", "left_node", "right_node", "root"]),
            ("layer6", ["left_node", "right_node", "root"]),
        ]
        for child in children
    ]
    groups = groups_of("dla")

    assert [g.name for g in groups] == ["base", "layer1", "layer2", *trees, "linear"]
    assert groups[3].branch_of == "layer3"
    assert groups[7].branch_of == "layer4"


def test_cct7_groups_separate_tokenizer_embedding_blocks_and_pool():
    require("cct7")
    blocks = [f"classifier.blocks.{b}" for b in range(7)]
    groups = groups_of("cct7")

    assert [g.modules for g in groups] == [
        ("tokenizer",),
        ("classifier.positional_emb",),
        *[(b,) for b in blocks[:-1]],
        (blocks[-1], "classifier.norm"),
        ("classifier.attention_pool",),
        ("classifier.fc",),
    ]
    assert groups[1].parameters == ("classifier.positional_emb",)


@pytest.mark.parametrize("arch", architecture_names())
def test_every_parameter_is_in_exactly_one_group(arch):
    names = [name for name, _ in model_of(arch).named_parameters()]
    grouped = [p for g in groups_of(arch) for p in g.parameters]

    assert sorted(grouped) == sorted(names)
    assert len(grouped) == len(set(grouped))


@pytest.mark.parametrize("arch", architecture_names())
def test_phases_are_cumulative_and_end_with_all_layers(arch):
    model = model_of(arch)
    groups = groups_of(arch)
    phases = derive_fdf_phases(model, input_shape(arch), 400, 400, STEPS)

    assert len(phases) == len(groups)
    selected = [set(phase_layers(model, p)) for p in phases]  # raises if a pattern matches nothing
    for k, (before, after) in enumerate(zip(selected, selected[1:], strict=False)):
        assert after - before == set(groups[k + 1].parameters)
    assert selected[0] == set(groups[0].parameters)
    assert selected[-1] == {name for name, _ in model.named_parameters()}
    assert phases[-1].name.endswith("all layers")


def test_parallel_branches_become_separate_groups_in_data_flow_order():
    groups = layer_groups(TinyBranchNet(), (1, 8, 8))

    assert [g.modules for g in groups] == [
        ("stem", "stem_bn"),
        ("offset",),
        ("branches.a",),
        ("branches.b",),
        ("stage",),  # its children run as a plain chain: one block, not two branches
        ("head",),
        ("unused",),
    ]
    assert [g.branch_of for g in groups[2:4]] == ["branches", "branches"]
    assert groups[4].branch_of is None


def test_unreached_modules_go_last_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="llpf_core.fdf"):
        groups = layer_groups(TinyBranchNet(), (1, 8, 8))

    assert groups[-1].parameters == ("unused.weight", "unused.bias")
    assert "unused" in caplog.text


def test_training_modes_are_restored():
    model = TinyBranchNet().train()
    model.branches.b.eval()
    before = {name: m.training for name, m in model.named_modules()}

    layer_groups(model, (1, 8, 8))

    assert {name: m.training for name, m in model.named_modules()} == before


def test_grouping_is_deterministic():
    require("dla")
    assert layer_groups(model_of("dla"), (3, 32, 32)) == list(groups_of("dla"))


def test_a_single_layer_model_gets_the_all_layers_phase_only():
    phases = derive_fdf_phases(nn.Linear(4, 2), (4,), 10, 20, STEPS)

    assert [(p.name, p.layers, p.iterations) for p in phases] == [
        ("Phase 1: all layers", ["*"], 20)
    ]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match=r"input_shape \(3, 0, 32\)"):
        layer_groups(TinyBranchNet(), (3, 0, 32))
    with pytest.raises(ValueError, match="no parameters"):
        layer_groups(nn.ReLU(), (3, 32, 32))
    with pytest.raises(ValueError, match="iterations_per_phase=0"):
        derive_fdf_phases(TinyBranchNet(), (1, 8, 8), 0, 10, STEPS)
    with pytest.raises(RuntimeError) as error:
        layer_groups(TinyBranchNet(), (3, 8, 8))  # stem takes one channel
    assert any("input_shape" in note for note in error.value.__notes__)
