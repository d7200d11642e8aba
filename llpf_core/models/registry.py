"""Registry of architectures: factory, datasets, default training recipe and path-finding preset."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


class ArchitectureError(ValueError):
    """An architecture name is unknown or a custom factory cannot be loaded."""


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture.

    `datasets` lists the datasets it is built for, its default first; `recipes` maps a dataset to
    the default training recipe name (Table 4); `preset` is the default path-finding preset (Table
    2) or None for the Follow-Data-Flow schedule derived from the model itself;
    `dataset_presets` overrides it per dataset.
    """

    name: str
    factory: Callable[..., nn.Module]
    datasets: tuple[str, ...]
    recipes: dict[str, str]
    preset: str | None
    description: str
    dataset_presets: dict[str, str] = field(default_factory=dict)

    def preset_for(self, dataset: str) -> str | None:
        """The default path-finding preset for `dataset` (None: derive FDF phases)."""
        return self.dataset_presets.get(dataset, self.preset)

    def recipe_for(self, dataset: str) -> str:
        """The default recipe for `dataset`, falling back to the default dataset's."""
        return self.recipes.get(dataset, self.recipes[self.datasets[0]])


ARCHITECTURES: dict[str, ArchSpec] = {}
BUILTIN_ORDER = (
    "lenet5",
    "resnet18",
    "vgg11",
    "densenet",
    "efficientnet_b0",
    "mobilenet_v2",
    "regnet_x_200mf",
    "shufflenet_v2",
    "dla",
    "cct7",
)


def register(spec: ArchSpec) -> ArchSpec:
    ARCHITECTURES[spec.name] = spec
    return spec


def _register_builtins() -> None:
    # Each module registers itself on import; imported here to keep start-up cheap.
    from llpf_core.models import lenet  # noqa: F401

    for module in (
        "resnet",
        "vgg",
        "densenet",
        "efficientnet",
        "mobilenet",
        "regnet",
        "shufflenet",
        "dla",
        "cct",
    ):
        try:
            importlib.import_module(f"llpf_core.models.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"llpf_core.models.{module}":
                raise


def architecture_names() -> list[str]:
    """Registered architecture names: the built-ins in a fixed order, then any others."""
    _register_builtins()
    builtins = [name for name in BUILTIN_ORDER if name in ARCHITECTURES]
    return builtins + [name for name in ARCHITECTURES if name not in BUILTIN_ORDER]


def get_arch(name: str) -> ArchSpec:
    """The spec of a registered architecture; raises ArchitectureError naming the valid ones."""
    _register_builtins()
    if name not in ARCHITECTURES:
        raise ArchitectureError(
            f"unknown architecture {name!r}; valid architectures: {', '.join(ARCHITECTURES)} "
            "(or a custom 'package.module:factory')"
        )
    return ARCHITECTURES[name]


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """Build architecture `name` for `num_classes` classes (or a custom `module:factory`)."""
    if ":" in name:
        return _build_custom(name, num_classes)
    return get_arch(name).factory(num_classes=num_classes)


def _build_custom(reference: str, num_classes: int) -> nn.Module:
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ArchitectureError(
            f"cannot load custom architecture {reference!r}: {error}; expected "
            "'package.module:factory' with factory(num_classes=...) returning an nn.Module"
        ) from error
    model = factory(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"{reference!r} returned {type(model).__name__}, not an nn.Module")
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
