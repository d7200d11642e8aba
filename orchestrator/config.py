"""The experiment configuration: validated once, resolved to explicit values, stored with it.

A configuration comes from defaults, an optional YAML/TOML file (`--config`) and CLI options,
in that order of precedence. `resolve` then fills in everything the architecture implies (its
dataset, training recipe, path-finding preset and phase schedule), so that the configuration
stored with an experiment says exactly what ran, and its fingerprint identifies the experiment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from llpf_core.config_files import read_mapping
from llpf_core.data import dataset_names, dataset_spec
from llpf_core.models import build_model, get_arch
from llpf_core.presets import get_preset
from llpf_core.recipes import resolve_recipe
from llpf_core.settings import (
    ContinuitySettings,
    EvaluationSettings,
    Frozen,
    LinearSettings,
    M2MSettings,
    M2OSettings,
    PhaseSpec,
    Recipe,
)

EMBEDDED_CONTINUITY = ContinuitySettings(samples_per_segment=10, train_subset=512)


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field and the reason."""


class ResourceSettings(Frozen):
    """Resources per stage and how many pairs run at once."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: a GPU where the stage was given one, else the CPU"
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per stage")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per stage; fractions share a GPU")
    max_pairs_in_flight: int | None = Field(
        None, ge=1, description="pairs worked on at once (default: as the cluster's CPUs allow)"
    )
    max_retries: int = Field(3, ge=0, description="retries of a stage whose worker died")


class FDFOverrides(Frozen):
    """Overrides of the Follow-Data-Flow schedule derived for architectures without a preset."""

    iterations_per_phase: int | None = Field(None, ge=1)
    final_iterations: int | None = Field(None, ge=1)
    step_f: float | None = Field(None, ge=0)
    step_a: float | None = Field(None, ge=0, le=1)
    step_c: float | None = Field(None, ge=0, le=1)


class ExperimentConfig(Frozen):
    """Everything that defines an experiment. Unset fields are filled in by `resolve`."""

    name: str = "llpf"
    arch: str = "lenet5"
    dataset: str | None = None
    data_dir: str | None = None
    download: bool = False
    pairs: int = Field(2, ge=1)
    base_seed: int = Field(0, ge=0)
    recipe_a: str | Recipe | None = None
    recipe_b: str | Recipe | None = None
    preset: str | None = None
    m2o: dict[str, Any] = Field(default_factory=dict, description="overrides of the preset")
    m2m: dict[str, Any] = Field(default_factory=dict, description="overrides of the preset")
    fdf: FDFOverrides = Field(
        default_factory=FDFOverrides, description="overrides of a derived FDF schedule"
    )
    continuity: ContinuitySettings | None = None
    linear: LinearSettings = Field(default_factory=LinearSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    fault_injection: dict[str, Any] = Field(default_factory=dict, description="tests only")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if ":" not in value:
            get_arch(value)  # raises with the valid names
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str | None) -> str | None:
        if value is not None and value not in dataset_names():
            raise ValueError(
                f"unknown dataset {value!r}; valid datasets: {', '.join(dataset_names())}"
            )
        return value


class ResolvedConfig(Frozen):
    """An experiment configuration with every choice made explicit (what gets stored)."""

    name: str
    arch: str
    dataset: str
    data_dir: str | None
    download: bool
    num_classes: int
    pairs: int
    base_seed: int
    recipe_a: Recipe
    recipe_b: Recipe
    preset: str
    m2o: M2OSettings
    m2m: M2MSettings
    phases: list[PhaseSpec]
    continuity: ContinuitySettings
    linear: LinearSettings
    evaluation: EvaluationSettings
    resources: ResourceSettings
    fault_injection: dict[str, Any] = Field(default_factory=dict)

    def fingerprint(self) -> str:
        """SHA-256 of what determines the results; equal configurations share an experiment.

        Resources are left out: the same experiment on more CPUs is the same experiment.
        """
        content = self.model_dump(mode="json", exclude={"resources"})
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def seeds(self, pair_index: int) -> tuple[int, int]:
        """Seeds of modes A and B of a pair: distinct for every mode of the experiment."""
        return self.base_seed + 2 * pair_index, self.base_seed + 2 * pair_index + 1


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> ExperimentConfig:
    """Defaults, then the file at `path`, then `overrides` (CLI options that were given).

    Raises ConfigError with one line per problem: the field's dotted name and the reason.
    """
    fields: dict[str, Any] = dict(read_mapping(path)) if path else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(fields.get(key), dict):
            fields[key] = {**fields[key], **value}
        else:
            fields[key] = value
    try:
        return ExperimentConfig.model_validate(fields)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def describe(error: ValidationError) -> str:
    """A validation error as `field.path: reason` lines."""
    lines = []
    for issue in error.errors():
        where = ".".join(str(part) for part in issue["loc"]) or "configuration"
        message = issue["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def resolve(config: ExperimentConfig) -> ResolvedConfig:
    """Fill in the dataset, recipes, preset and phases the architecture implies."""
    try:
        return _resolve(config)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None


def _resolve(config: ExperimentConfig) -> ResolvedConfig:
    custom = ":" in config.arch
    spec = None if custom else get_arch(config.arch)
    dataset = config.dataset or (spec.datasets[0] if spec else "digits")
    if spec and dataset not in spec.datasets:
        raise ConfigError(
            f"dataset: {config.arch} is built for {', '.join(spec.datasets)}, not {dataset!r}"
        )
    _check_data_dir(dataset, config.data_dir)
    num_classes = dataset_spec(dataset).num_classes
    try:
        default = None if custom else spec.recipe_for(dataset)
        recipe_a = _recipe("recipe_a", config.recipe_a, default)
        recipe_b = _recipe("recipe_b", config.recipe_b, recipe_a) if config.recipe_b else recipe_a
        preset = get_preset(config.preset or (spec and spec.preset_for(dataset)) or "fdf")
    except ValidationError:
        raise  # described field by field by `resolve`
    except ValueError as error:
        raise ConfigError(str(error)) from None

    m2o = _section("m2o", M2OSettings, {**preset.m2o.model_dump(), **config.m2o})
    m2m = _section("m2m", M2MSettings, {**preset.m2m.model_dump(), **config.m2m})
    phases = m2m.phases or _derived_phases(
        config.arch, num_classes, dataset, _with_fdf(preset, config.fdf)
    )
    continuity = config.continuity or (
        EMBEDDED_CONTINUITY if dataset == "digits" else ContinuitySettings()
    )
    return ResolvedConfig(
        name=config.name,
        arch=config.arch,
        dataset=dataset,
        data_dir=config.data_dir,
        download=config.download,
        num_classes=num_classes,
        pairs=config.pairs,
        base_seed=config.base_seed,
        recipe_a=recipe_a,
        recipe_b=recipe_b,
        preset=preset.name,
        m2o=m2o,
        m2m=m2m.model_copy(update={"phases": None}),
        phases=phases,
        continuity=continuity,
        linear=config.linear,
        evaluation=config.evaluation,
        resources=config.resources,
        fault_injection=config.fault_injection,
    )


def _check_data_dir(dataset: str, data_dir: str | None) -> None:
    """Catch a missing data directory here, before any work is recorded or started."""
    if not dataset_spec(dataset).needs_files:
        return
    if data_dir is None:
        raise ConfigError(
            f"data_dir: dataset {dataset!r} is read from disk; give its directory "
            "with --data-dir (or use the bundled 'digits')"
        )
    if not Path(data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir: {data_dir!r} is not a directory")


def _recipe(field: str, given: str | Recipe | None, default: str | Recipe | None) -> Recipe:
    """A recipe by name or file, or a mapping that overrides the fields it names of `default`."""
    if given is None:
        if default is None:
            raise ConfigError(f"{field}: a custom architecture needs an explicit --recipe")
        return resolve_recipe(default)
    if not isinstance(given, Recipe) or default is None:
        return resolve_recipe(given)
    base = resolve_recipe(default)
    changed = {name: getattr(given, name) for name in given.model_fields_set}
    changed.setdefault("name", f"{base.name} (modified)")
    return _section(field, Recipe, {**base.model_dump(), **changed})


def _section(name: str, model: Any, fields: dict[str, Any]) -> Any:
    """Validate one section, naming it in any error (`m2m.lr: ...`)."""
    try:
        return model.model_validate(fields)
    except ValidationError as error:
        raise ConfigError(
            "; ".join(f"{name}.{line}" for line in describe(error).split("; "))
        ) from None


def _with_fdf(preset: Any, overrides: FDFOverrides) -> Any:
    steps = {
        k: v for k in ("step_f", "step_a", "step_c") if (v := getattr(overrides, k)) is not None
    }
    update: dict[str, Any] = {}
    if overrides.iterations_per_phase is not None:
        update["fdf_iterations_per_phase"] = overrides.iterations_per_phase
    if overrides.final_iterations is not None:
        update["fdf_final_iterations"] = overrides.final_iterations
    if steps:
        update["fdf_steps"] = preset.fdf_steps.model_copy(update=steps)
    return preset.model_copy(update=update) if update else preset


def _derived_phases(arch: str, num_classes: int, dataset: str, preset: Any) -> list[PhaseSpec]:
    from llpf_core.presets import resolve_phases

    model = build_model(arch, num_classes=num_classes)
    return resolve_phases(model, preset, dataset_spec(dataset).input_shape)
