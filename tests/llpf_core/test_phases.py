"""Layer selection: patterns, normalization layers, and M2O's exclusions."""

from __future__ import annotations

import pytest
from torch import nn

from llpf_core.phases import m2o_layers, matches, norm_parameter_names, phase_layers, select
from llpf_core.settings import PhaseSpec


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.head = nn.Linear(4, 2)


def test_patterns_are_globs_or_module_prefixes():
    assert matches("layer1.0.conv1.weight", "layer1")
    assert matches("layer1.0.conv1.weight", "layer1.*")
    assert matches("fc.bias", "*.bias")
    assert not matches("layer10.weight", "layer1")
    names = ["a.w", "a.b", "b.w"]
    assert select(names, ["a"], exclude=["*.b"]) == ["a.w"]


def test_normalization_layers_are_recognised_generically():
    norms = norm_parameter_names(Net())
    assert norms == {
        "bn.weight",
        "bn.bias",
        "gn.weight",
        "gn.bias",
        "inorm.weight",
        "inorm.bias",
        "block.1.weight",
        "block.1.bias",
    }


def test_m2o_layers_leave_out_norm_layers_and_the_configured_exclusions():
    names = m2o_layers(Net(), exclude_norm=True, exclude=["head"])
    assert names == ["conv.weight", "conv.bias", "block.0.weight", "block.0.bias"]
    everything = m2o_layers(Net(), exclude_norm=False, exclude=[])
    assert len(everything) == len(list(Net().parameters()))


def test_a_phase_pattern_that_matches_nothing_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'layer9' matches no parameter"):
        phase_layers(Net(), PhaseSpec(name="p", layers=["layer9"], iterations=1, step_f=1))
    chosen = phase_layers(
        Net(),
        PhaseSpec(name="p", layers=["conv", "head"], exclude=["*.bias"], iterations=1, step_f=1),
    )
    assert chosen == ["conv.weight", "head.weight"]
