"""Named path-finding presets: the paper's Tables 2 (M2M) and 3 (M2O) as settings.

A preset fixes the phases (layer groups, iterations T, step sizes) and the `Train^r` settings of
both algorithms for one architecture. Architectures without a preset use the Follow-Data-Flow
(FDF) schedule derived from the model itself (`llpf_core.fdf`) with the "fdf" preset's settings;
`resolve_phases` returns whichever applies.

Transcription conventions (appendix A.5): "train until loss < X or r > N" is `loss_threshold=X,
max_rounds=N`, the loss being a rolling mean over 10 batches (Table 2, footnote b); a fixed
"r=5" is `loss_threshold=None, max_rounds=5`; SGD(eta, beta=0) is `lr=eta, momentum=0`;
unmentioned step sizes are 0; "all except norm layers" is `exclude_norm=True`.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from llpf_core.fdf import derive_fdf_phases
from llpf_core.settings import Frozen, M2MSettings, M2OSettings, PhaseSpec, StepSizes


class Preset(Frozen):
    """Settings for both algorithms; `m2m.phases` None means "derive FDF phases".

    The `fdf_*` fields are the schedule `llpf_core.fdf.derive_fdf_phases` builds when phases are
    derived: T per cumulative phase, T of the final all-layers phase, and the step sizes of all.
    """

    name: str
    source: str = Field(description="where the numbers come from")
    description: str
    m2m: M2MSettings
    m2o: M2OSettings
    fdf_iterations_per_phase: int = Field(
        400, ge=1, description="T of each cumulative FDF phase (Table 2, DLA FDF row)"
    )
    fdf_final_iterations: int = Field(
        400, ge=1, description="T of the final all-layers FDF phase (Table 2, DLA FDF row)"
    )
    fdf_steps: StepSizes = Field(
        default_factory=lambda: StepSizes(step_a=1e-3, step_c=2e-3),
        description="step sizes of every FDF phase (Table 2, DLA FDF row)",
    )


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; raises ValueError naming the valid presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    return PRESETS[name]


def resolve_phases(
    model: nn.Module, preset: Preset, input_shape: tuple[int, ...]
) -> list[PhaseSpec]:
    """Algorithm 1's phases for `model` under `preset`.

    The preset's own phases (Table 2) if it has them, else the FDF phases derived from the model
    (section 4, `llpf_core.fdf.derive_fdf_phases`) with the preset's `fdf_*` settings;
    `input_shape` is one sample's shape, e.g. (3, 32, 32), used only for deriving.
    """
    if preset.m2m.phases is not None:
        return list(preset.m2m.phases)
    return derive_fdf_phases(
        model,
        input_shape,
        iterations_per_phase=preset.fdf_iterations_per_phase,
        final_iterations=preset.fdf_final_iterations,
        steps=preset.fdf_steps,
    )


register(
    Preset(
        name="lenet5",
        source="Table 2 and Table 3, LeNet5@MNIST",
        description="one phase over all layers, r=5 fixed, step_f=1e-3, 30,000 iterations",
        m2m=M2MSettings(
            phases=[PhaseSpec(name="all layers", layers=["*"], iterations=30000, step_f=1e-3)],
            lr=1e-3,
            batch_size=64,
            loss_threshold=None,
            max_rounds=5,
        ),
        m2o=M2OSettings(
            iterations=1400,
            step_a=1e-3,
            lr=1e-3,
            batch_size=64,
            loss_threshold=0.02,
            max_rounds=100,
            exclude_norm=False,
        ),
    )
)

# The embedded default: the same algorithm and layer choice as "lenet5", with steps large enough
# that a pair is connected in about a minute on one CPU core. step_a makes the distance shrink
# geometrically, step_f lets every layer arrive exactly at the destination at the end.
register(
    Preset(
        name="lenet5-digits",
        source="this project: Table 2's LeNet5@MNIST with larger steps, for the 2-core default",
        description="one phase over all layers, train until loss < 0.05 (r <= 20), "
        "step_a=0.035, step_f=0.01, 200 iterations, every 2nd iterate stored",
        m2m=M2MSettings(
            phases=[
                PhaseSpec(
                    name="all layers", layers=["*"], iterations=200, step_a=0.035, step_f=0.01
                )
            ],
            store_interval=2,
            lr=1e-2,
            batch_size=64,
            loss_threshold=0.05,
            max_rounds=20,
            arrival_tolerance=0.0,
        ),
        m2o=M2OSettings(
            iterations=300,
            store_interval=2,
            step_a=0.02,
            step_f=0.0,
            lr=1e-2,
            batch_size=64,
            loss_threshold=0.05,
            max_rounds=20,
            exclude_norm=True,
        ),
    )
)


# ResNet18@CIFAR10 (Table 2): one phase over all layers, then the stem and the classifier, then
# one residual stage more per phase. layer4 is never added on its own: it joins in Phase 6.
_RESNET18_STEM_AND_HEAD = ["conv1.weight", "bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
_RESNET18_PHASES = [
    PhaseSpec(name="Phase 1: all layers", layers=["*"], iterations=10000, step_a=5e-4),
    PhaseSpec(
        name="Phase 2: conv1, bn1, fc",
        layers=_RESNET18_STEM_AND_HEAD,
        iterations=5000,
        step_a=1e-3,
    ),
    *[
        PhaseSpec(
            name=f"Phase {k}: Phase {k - 1} + layer{k - 2}",
            layers=_RESNET18_STEM_AND_HEAD + [f"layer{i}.*" for i in range(1, k - 1)],
            iterations=5000,
            step_a=1e-3,
        )
        for k in (3, 4, 5)
    ],
    PhaseSpec(name="Phase 6: all layers", layers=["*"], iterations=5000, step_a=1e-3),
]

register(
    Preset(
        name="resnet18",
        source="Table 2 and Table 3, ResNet18@CIFAR10",
        description="six phases: all layers, stem + fc, + layer1, + layer2, + layer3, all layers; "
        "train until loss < 0.04 (r <= 200); M2O 1,400 iterations without norm layers",
        m2m=M2MSettings(
            phases=_RESNET18_PHASES,
            lr=1e-3,
            momentum=0.0,
            batch_size=256,
            loss_threshold=0.04,
            max_rounds=200,
        ),
        m2o=M2OSettings(
            iterations=1400,
            step_a=1e-3,
            step_c=0.0,
            lr=1e-3,
            momentum=0.0,
            batch_size=256,
            loss_threshold=0.02,
            max_rounds=5000,
            exclude_norm=True,
        ),
    )
)

# CCT7_3x1_32 has seven encoder blocks, classifier.blocks.0 to classifier.blocks.6.
_CCT7_BLOCKS = 7

# CCT7_3x1_32@CIFAR10 (Table 2): the tokenizer and everything in the classifier but its blocks,
# then one block more per phase; blocks.6 only joins in the final all-layers phase. "Phase 1 +
# blocks.0" cannot keep Phase 1's `exclude=["classifier.blocks"]` (it would exclude blocks.0 too),
# so each phase excludes the blocks not yet added instead.
_CCT7_PHASES = [
    *[
        PhaseSpec(
            name="Phase 1: tokenizer.conv_layers + classifier.* exclude blocks"
            if k == 1
            else f"Phase {k}: Phase {k - 1} + classifier.blocks.{k - 2}",
            layers=["tokenizer.conv_layers", "classifier"]
            + [f"classifier.blocks.{b}.*" for b in range(k - 1)],
            exclude=["classifier.blocks"]
            if k == 1
            else [f"classifier.blocks.{b}" for b in range(k - 1, _CCT7_BLOCKS)],
            iterations=5000,
            step_a=1e-3,
            step_f=1e-3,
        )
        for k in range(1, 8)
    ],
    PhaseSpec(name="Phase 8: all layers", layers=["*"], iterations=5000, step_a=1e-3, step_f=1e-3),
]

# Table 3 has one CCT7 row; "cct7" and "cct7-fdf" share it.
_CCT7_M2O = M2OSettings(
    iterations=1000,
    step_a=1e-3,
    step_c=0.0,
    lr=1e-3,
    momentum=0.0,
    batch_size=128,
    loss_threshold=0.05,
    max_rounds=5000,
    exclude_norm=True,
)

register(
    Preset(
        name="cct7",
        source="Table 2 and Table 3, CCT7_3x1_32@CIFAR10",
        description="eight phases: tokenizer + classifier without blocks, + blocks.0 ... "
        "+ blocks.5, all layers; train until loss < 0.05 (r <= 10,000); step_a=step_f=1e-3",
        m2m=M2MSettings(
            phases=_CCT7_PHASES,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.05,
            max_rounds=10000,
        ),
        m2o=_CCT7_M2O,
    )
)

# CCT7_3x1_32@CIFAR10, FDF strategy (Table 2): the parallel layers after patching first
# (tokenizer, positional embedding, attention pool), then one block more per phase. The paper's
# row "Phase 8 Phase 6 + blocks.6" is evidently a typo for "Phase 7 + blocks.6": every other row
# adds one block to the phase before it, and Phase 6 + blocks.6 would drop blocks.5 again.
_CCT7_FDF_PHASES = [
    PhaseSpec(
        name="Phase 1: tokenizer.conv_layers + classifier.positional_emb + attention_pool"
        if k == 1
        else f"Phase {k}: Phase {k - 1} + classifier.blocks.{k - 2}",
        layers=[
            "tokenizer.conv_layers",
            "classifier.positional_emb",
            "classifier.attention_pool",
        ]
        + [f"classifier.blocks.{b}.*" for b in range(k - 1)],
        iterations=500,
        step_a=2e-3,
        step_c=2e-3,
    )
    for k in range(1, 9)
] + [PhaseSpec(name="Phase 9: all layers", layers=["*"], iterations=1000, step_a=2e-3, step_c=2e-3)]

register(
    Preset(
        name="cct7-fdf",
        source="Table 2 (CCT7_3x1_32@CIFAR10, FDF strategy) and Table 3 (CCT7)",
        description="nine phases: tokenizer + positional embedding + attention pool, + blocks.0 "
        "... + blocks.6, all layers; train until loss < 0.05 (r <= 1,000); "
        "step_a=step_c=2e-3",
        m2m=M2MSettings(
            phases=_CCT7_FDF_PHASES,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.05,
            max_rounds=1000,
        ),
        m2o=_CCT7_M2O,
    )
)

# DLA@CIFAR10, FDF strategy (Table 2): the stem layer by layer, then every tree's children one by
# one (prev_root, level_1, left_node, right_node, root for the level-2 trees layer4 and layer5),
# then all layers, which adds `linear`. In this row the table's step columns read step_a, step_c.
_DLA_GROUPS = [
    "base.0",
    "base.1",
    "layer1",
    "layer2",
    "layer3.left_node",
    "layer3.right_node",
    "layer3.root",
    *[
        f"{tree}.{child}"
        for tree in ("layer4", "layer5")
        for child in ("prev_root", "level_1", "left_node", "right_node", "root")
    ],
    "layer6.left_node",
    "layer6.right_node",
    "layer6.root",
]
_DLA_PHASES = [
    PhaseSpec(
        name=f"Phase 1: {group}" if k == 1 else f"Phase {k}: Phase {k - 1} + {group}",
        layers=[f"{g}.*" for g in _DLA_GROUPS[:k]],
        iterations=400,
        step_a=1e-3,
        step_c=2e-3,
    )
    for k, group in enumerate(_DLA_GROUPS, start=1)
] + [PhaseSpec(name="Phase 21: all layers", layers=["*"], iterations=400, step_a=1e-3, step_c=2e-3)]

register(
    Preset(
        name="dla",
        source="Table 2 (DLA@CIFAR10, FDF strategy) and Table 3 (DLA@CIFAR10)",
        description="21 phases: base.0, + base.1, + layer1, + layer2, + each tree child of "
        "layer3 ... layer6, all layers; train until loss < 0.005 (r <= 1,000); step_a=1e-3, "
        "step_c=2e-3",
        m2m=M2MSettings(
            phases=_DLA_PHASES,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.005,
            max_rounds=1000,
        ),
        m2o=M2OSettings(
            iterations=1000,
            step_a=5e-4,
            step_c=1e-3,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.005,
            max_rounds=1000,
            exclude_norm=True,
        ),
    )
)

# Architectures without a Table 2 row: phases derived by FDF (llpf_core.fdf) with the settings of
# the paper's FDF rows. T=400 per phase and step_a=1e-3, step_c=2e-3 are DLA's; the stopping rule
# (loss < 0.05 or r > 1,000) and batch 128 are CCT7-FDF's, the looser of the two loss targets.
# M2O follows Table 3's CCT7 and DLA rows (1,000 iterations, batch 128, no norm layers) with the
# step size of every other Table 3 row (step_a=1e-3, step_c=0) and the same stopping rule as M2M.
register(
    Preset(
        name="fdf",
        source="this project: Table 2's FDF rows (DLA, CCT7) and Table 3's CCT7/DLA rows, for "
        "phases derived from the model by the Follow Data Flow strategy (section 4)",
        description="derived FDF phases of 400 iterations, final all-layers phase of 400; "
        "train until loss < 0.05 (r <= 1,000); step_a=1e-3, step_c=2e-3",
        m2m=M2MSettings(
            phases=None,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.05,
            max_rounds=1000,
        ),
        m2o=M2OSettings(
            iterations=1000,
            step_a=1e-3,
            step_c=0.0,
            lr=1e-3,
            momentum=0.0,
            batch_size=128,
            loss_threshold=0.05,
            max_rounds=1000,
            exclude_norm=True,
        ),
        fdf_iterations_per_phase=400,
        fdf_final_iterations=400,
        fdf_steps=StepSizes(step_a=1e-3, step_c=2e-3),
    )
)
