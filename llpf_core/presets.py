"""Named path-finding presets: the paper's Tables 2 (M2M) and 3 (M2O) as settings.

A preset fixes the phases (layer groups, iterations T, step sizes) and the `Train^r` settings of
both algorithms for one architecture. Architectures without a preset use the Follow-Data-Flow
(FDF) schedule derived from the model itself (`llpf_core.fdf`) with the "fdf" preset's settings.
"""

from __future__ import annotations

from pydantic import Field

from llpf_core.settings import Frozen, M2MSettings, M2OSettings, PhaseSpec


class Preset(Frozen):
    """Settings for both algorithms; `m2m.phases` None means "derive FDF phases"."""

    name: str
    source: str = Field(description="where the numbers come from")
    description: str
    m2m: M2MSettings
    m2o: M2OSettings


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
            iterations=1400, step_a=1e-3, lr=1e-3, batch_size=64, loss_threshold=0.02,
            max_rounds=100, exclude_norm=False,
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
        "step_a=0.02, step_f=0.01, at most 400 iterations",
        m2m=M2MSettings(
            phases=[
                PhaseSpec(name="all layers", layers=["*"], iterations=400, step_a=0.02, step_f=0.01)
            ],
            lr=1e-2,
            batch_size=64,
            loss_threshold=0.05,
            max_rounds=20,
            arrival_tolerance=0.0,
        ),
        m2o=M2OSettings(
            iterations=300, step_a=0.02, step_f=0.0, lr=1e-2, batch_size=64, loss_threshold=0.05,
            max_rounds=20, exclude_norm=True,
        ),
    )
)
