"""Registered architectures: parameter counts, classifier swaps, forward, training, names.

The counts are those of the implementations the paper uses (appendix A.11); each architecture's
factory docstring says where its count comes from. Models are built for 10 classes unless a test
says otherwise and run on tiny seeded batches, so the file takes seconds on one CPU core.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llpf_core.models import ARCHITECTURES, architecture_names, build_model, parameter_count
from llpf_core.models.mobilenet import mobilenet_v2_torchvision
from llpf_core.models.shufflenet import shufflenet_v2_x1_0
from llpf_core.phases import matches, select
from llpf_core.presets import PRESETS
from llpf_core.recipes import RECIPES

# Trainable parameters for 10 classes.
PARAMETERS_10_CLASSES: dict[str, int] = {
    "lenet5": 61_706,
    "resnet18": 11_173_962,
    "vgg11": 9_231_114,
    "densenet": 6_956_298,
    "efficientnet_b0": 3_599_686,
    "mobilenet_v2": 2_237_770,
    "regnet_x_200mf": 2_321_946,
    "shufflenet_v2": 960_706,
    "dla": 16_291_386,
    "cct7": 3_760_139,
}

# The module holding each CIFAR architecture's output layer.
CLASSIFIERS: dict[str, str] = {
    "resnet18": "fc",
    "vgg11": "classifier",
    "densenet": "linear",
    "efficientnet_b0": "linear",
    "mobilenet_v2": "fc",
    "regnet_x_200mf": "linear",
    "shufflenet_v2": "fc",
    "dla": "linear",
    "cct7": "classifier.fc",
}
CIFAR_ARCHITECTURES = list(CLASSIFIERS)
PRESET_ARCHITECTURES = {"resnet18": "resnet18", "dla": "dla", "cct7": "cct7"}

# Table 2's layer patterns for the architectures it lists with explicit phases.
RESNET18_PATTERNS = ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"] + [
    f"layer{i}.*" for i in (1, 2, 3)
]
DLA_PATTERNS = ["base.0.*", "base.1.*", "layer1.*", "layer2.*"] + [
    f"layer3.{node}.*" for node in ("left_node", "right_node", "root")
]
for _tree in ("layer4", "layer5"):
    DLA_PATTERNS += [
        f"{_tree}.{node}.*" for node in ("prev_root", "level_1", "left_node", "right_node", "root")
    ]
DLA_PATTERNS += [f"layer6.{node}.*" for node in ("left_node", "right_node", "root")]
CCT_PATTERNS = [
    "tokenizer.conv_layers",
    "classifier.positional_emb",
    "classifier.attention_pool",
    "classifier.*",
] + [f"classifier.blocks.{i}.*" for i in range(7)]


@pytest.fixture(autouse=True)
def seeded_rng():
    """Seed torch for each test and restore the global generator afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def input_batch(name: str) -> torch.Tensor:
    shape = (2, 1, 28, 28) if name == "lenet5" else (2, 3, 32, 32)
    return torch.randn(shape)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_registry_lists_the_papers_architectures():
    assert set(PARAMETERS_10_CLASSES) <= set(architecture_names())


@pytest.mark.parametrize("name", CIFAR_ARCHITECTURES)
def test_spec_names_cifar_recipes_and_presets(name):
    spec = ARCHITECTURES[name]

    assert spec.datasets == ("cifar10", "cifar100")
    assert spec.recipes["cifar10"] == f"{name}-cifar10"
    expected_cifar100 = f"{name}-cifar100"
    if expected_cifar100 not in RECIPES:
        expected_cifar100 = f"{name}-cifar10"
    assert spec.recipes["cifar100"] == expected_cifar100
    assert all(recipe in RECIPES for recipe in spec.recipes.values())
    assert spec.preset == PRESET_ARCHITECTURES.get(name)


@pytest.mark.parametrize("name", list(PARAMETERS_10_CLASSES))
def test_parameter_count_for_10_classes(name):
    assert parameter_count(build_model(name, num_classes=10)) == PARAMETERS_10_CLASSES[name]


def test_cct7_count_matches_published_3_76m():
    # SHI-Labs/Compact-Transformers lists CCT-7/3x1 with 3.760M parameters.
    assert abs(PARAMETERS_10_CLASSES["cct7"] - 3.76e6) / 3.76e6 < 0.005


@pytest.mark.parametrize(
    ("factory", "count"), [(mobilenet_v2_torchvision, 2_236_682), (shufflenet_v2_x1_0, 1_263_854)]
)
def test_unregistered_torchvision_variants(factory, count):
    model = factory(num_classes=10)

    assert parameter_count(model) == count
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", CIFAR_ARCHITECTURES)
def test_100_classes_change_only_the_classifier(name):
    ten = shapes(build_model(name, num_classes=10))
    hundred = shapes(build_model(name, num_classes=100))

    assert list(ten) == list(hundred)
    changed = {key for key in ten if ten[key] != hundred[key]}
    classifier = CLASSIFIERS[name]
    assert changed == {f"{classifier}.weight", f"{classifier}.bias"}
    assert ten[f"{classifier}.weight"][0] == 10
    assert hundred[f"{classifier}.weight"][0] == 100


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", CIFAR_ARCHITECTURES)
def test_forward_gives_logits(name, num_classes):
    model = build_model(name, num_classes=num_classes).eval()

    with torch.no_grad():
        logits = model(input_batch(name))

    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(PARAMETERS_10_CLASSES))
def test_one_sgd_step_changes_weights(name):
    model = build_model(name, num_classes=10).train()
    before = {key: p.detach().clone() for key, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    loss = nn.functional.cross_entropy(model(input_batch(name)), torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    changed = [key for key, p in model.named_parameters() if not torch.equal(p, before[key])]
    assert len(changed) > len(before) // 2


@pytest.mark.parametrize("name", list(PARAMETERS_10_CLASSES))
def test_names_and_seeded_weights_are_stable_across_constructions(name):
    torch.manual_seed(1)
    first = build_model(name, num_classes=10)
    torch.manual_seed(1)
    second = build_model(name, num_classes=10)

    assert shapes(first) == shapes(second)
    assert list(shapes(first)) == list(shapes(second))
    for (key, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a, b), key


def test_cct7_training_forward_is_reproducible_under_a_seed():
    # attention dropout and stochastic depth draw from torch's generator
    model = build_model("cct7", num_classes=10).train()
    x = torch.randn(2, 3, 32, 32)

    torch.manual_seed(5)
    first = model(x)
    torch.manual_seed(5)
    second = model(x)

    assert torch.equal(first, second)


@pytest.mark.parametrize(
    ("name", "patterns"),
    [("resnet18", RESNET18_PATTERNS), ("dla", DLA_PATTERNS), ("cct7", CCT_PATTERNS)],
)
def test_table2_patterns_each_match_a_parameter(name, patterns):
    names = list(shapes(build_model(name, num_classes=10)))

    unmatched = [p for p in patterns if not any(matches(n, p) for n in names)]
    assert unmatched == []


def test_dla_table2_phases_cover_all_but_the_classifier():
    names = list(shapes(build_model("dla", num_classes=10)))

    assert select(names, DLA_PATTERNS) == [n for n in names if not n.startswith("linear.")]


def test_cct7_first_phase_is_everything_but_the_blocks():
    # Table 2, CCT7 phase 1: tokenizer.conv_layers + classifier.* excluding the blocks
    names = list(shapes(build_model("cct7", num_classes=10)))

    first = select(names, ["tokenizer.conv_layers", "classifier.*"], ["classifier.blocks.*"])

    assert first == [
        "tokenizer.conv_layers.0.0.weight",
        "classifier.positional_emb",
        "classifier.attention_pool.weight",
        "classifier.attention_pool.bias",
        "classifier.norm.weight",
        "classifier.norm.bias",
        "classifier.fc.weight",
        "classifier.fc.bias",
    ]
    assert {n.split(".")[2] for n in names if n.startswith("classifier.blocks.")} == {
        str(i) for i in range(7)
    }


def test_resnet18_keeps_torchvision_names_with_a_cifar_stem():
    model = build_model("resnet18", num_classes=10)
    params = shapes(model)

    assert list(params)[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert params["conv1.weight"] == (64, 3, 3, 3)
    assert params["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert params["fc.weight"] == (10, 512)
    assert isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("name", sorted(PRESET_ARCHITECTURES))
def test_named_presets_exist_when_registered(name):
    # The presets module may not define every Table 2 preset yet; when it does, names must agree.
    preset = ARCHITECTURES[name].preset
    if preset not in PRESETS:
        pytest.skip(f"preset {preset!r} is not defined yet")
    assert PRESETS[preset].name == preset
