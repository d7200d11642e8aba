"""Validated settings of the path-finding algorithms and of mode training.

These are the parameters of the paper's Algorithms 1 and 2 (section 4, appendix A.5, Tables 2-4).
They live in the core so that the algorithms can be called without the orchestrator; the
orchestrator composes them into one experiment configuration. Every model is frozen and rejects
unknown fields, so a typo in a configuration file is an error, not a silently ignored key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Frozen(BaseModel):
    """Base of all settings: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class StepSizes(Frozen):
    """Move's step length per layer: `step_a*|P_iD| + step_c*|P_0D| + step_f` (Alg. 1 line 14)."""

    step_f: float = Field(0.0, ge=0, description="fixed length per iteration")
    step_a: float = Field(0.0, ge=0, le=1, description="share of the current distance |P_iD|")
    step_c: float = Field(0.0, ge=0, le=1, description="share of the initial distance |P_0D|")

    @model_validator(mode="after")
    def _some_step(self) -> StepSizes:
        if self.step_f == 0 and self.step_a == 0 and self.step_c == 0:
            raise ValueError("step_f, step_a and step_c are all 0: Move would never move")
        return self


class PhaseSpec(StepSizes):
    """One phase of M2M: the layer groups it applies to and how long it runs (Table 2 rows).

    `layers` are patterns over parameter names: `*`-style globs (`layer1.*`) or a module prefix
    (`layer1` matches every parameter below it). Each pattern is one layer group.
    """

    name: str = ""
    layers: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[str] = Field(default_factory=list)
    iterations: int = Field(..., ge=1, description="T, Algorithm 1 line 4")


class TrainRoundSettings(Frozen):
    """The `Train^r` step shared by both algorithms (Alg. 1 line 7, Alg. 2 line 8).

    Training stops once the rolling mean of the last `rolling_window` batch losses is below
    `loss_threshold`, or after `max_rounds` batches. With no threshold it always runs
    `max_rounds` batches (the paper's fixed r=5 for LeNet-5). The window persists across
    iterations, so it is part of a stage's checkpoint.
    """

    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)
    loss_threshold: float | None = Field(None, gt=0)
    max_rounds: int = Field(200, ge=1)
    min_rounds: int = Field(1, ge=1)
    rolling_window: int = Field(10, ge=1)
    augment: bool = Field(True, description="apply the dataset's training augmentation")
    check_interval_steps: int = Field(
        1,
        ge=1,
        description="read the rolling loss back every this many batches; above 1 saves a "
        "host sync per batch on a GPU at the price of up to that many extra batches",
    )


class M2MSettings(TrainRoundSettings):
    """Algorithm 1 (LLPF_M2M): from the start point to the destination mode, phase by phase."""

    preset: str | None = Field(
        None, description="named phase schedule (see `llpf phases`); ignored if phases given"
    )
    phases: list[PhaseSpec] | None = None
    variance_target: Literal["start", "destination"] = Field(
        "start",
        description="sphere VarianceCorrection projects onto: the start point's (paper) or the "
        "destination's",
    )
    arrival_tolerance: float = Field(
        0.0,
        ge=0,
        description="end a phase early once every applied layer is within this L2 distance of "
        "the destination (0: run all T iterations)",
    )
    eval_interval: int = Field(1, ge=1, description="evaluate train/test metrics every N points")
    store_interval: int = Field(1, ge=1, description="keep every N-th iterate as a path point")
    checkpoint_interval: int = Field(50, ge=1, description="iterations between checkpoints")


class M2OSettings(TrainRoundSettings, StepSizes):
    """Algorithm 2 (LLPF_M2O): from the mode on the larger variance sphere toward the origin.

    The destination is the start's projection onto the other mode's variance sphere (section 5,
    "Connecting modes on different variance spheres"); a layer stops moving once its variance has
    reached the other mode's. Normalization layers and `exclude` patterns neither move nor train.
    """

    step_a: float = Field(1e-3, ge=0, le=1)
    iterations: int = Field(1400, ge=1, description="cap on iterations, Algorithm 2 line 5")
    exclude_norm: bool = True
    exclude: list[str] = Field(default_factory=list)
    sphere_tolerance: float = Field(
        0.05,
        ge=0,
        description="relative variance gap below which two modes count as on the same sphere, "
        "so that M2O is skipped",
    )
    eval_interval: int = Field(1, ge=1)
    store_interval: int = Field(1, ge=1)
    checkpoint_interval: int = Field(50, ge=1)


class ContinuitySettings(Frozen):
    """Section 5 continuity check: loss along straight lines between consecutive path points."""

    enabled: bool = True
    samples_per_segment: int = Field(50, ge=2, description="paper: 50, endpoints included")
    train_subset: int | None = Field(
        None, ge=1, description="evaluate on a fixed subset of this many training images"
    )


class LinearSettings(Frozen):
    """The linear-interpolation baseline A-B: the loss barrier LLPF is meant to avoid."""

    samples: int = Field(25, ge=2, description="points on the line A-B, endpoints included")


class ScheduleSpec(Frozen):
    """Learning-rate schedule of a training recipe (Table 4, last column)."""

    kind: Literal["constant", "onecycle", "cosine", "multistep"] = "constant"
    max_lr: float | None = Field(None, gt=0, description="onecycle peak")
    min_lr: float = Field(0.0, ge=0, description="cosine floor")
    warmup_lr: float | None = Field(None, ge=0, description="cosine warmup start")
    warmup_epochs: int = Field(0, ge=0)
    cooldown_epochs: int = Field(0, ge=0)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)


class Recipe(Frozen):
    """How a mode is trained (one row of Table 4)."""

    name: str = "custom"
    optimizer: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class EvaluationSettings(Frozen):
    """How a point of a path (or of an interpolation) is evaluated."""

    batch_size: int = Field(1024, ge=1)
    norm_recalibration_batches: int = Field(
        20,
        ge=0,
        description="un-augmented training batches used to re-estimate BatchNorm statistics "
        "before evaluating a point; 0 keeps the statistics the point carries",
    )
