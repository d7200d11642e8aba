"""Layer selection: which parameters a phase (or M2O) applies to.

Patterns address parameters by name: an `fnmatch` glob (`layer1.*`, `*.bias`) or a module prefix
(`layer1` matches everything below `layer1.`); `*` matches every parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from torch import nn

from llpf_core.settings import PhaseSpec

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = NORM_TYPES + (nn.RMSNorm,)


def matches(name: str, pattern: str) -> bool:
    """Whether parameter `name` is selected by `pattern` (glob, or module prefix)."""
    return fnmatchcase(name, pattern) or name.startswith(pattern.rstrip(".") + ".")


def select(names: Iterable[str], patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """The names matched by any of `patterns` and by none of `exclude`, in their given order."""
    return [
        name
        for name in names
        if any(matches(name, p) for p in patterns) and not any(matches(name, p) for p in exclude)
    ]


def phase_layers(model: nn.Module, phase: PhaseSpec) -> list[str]:
    """Parameter names a phase applies to; raises ValueError if a pattern matches nothing."""
    names = [name for name, _ in model.named_parameters()]
    for pattern in phase.layers:
        if not any(matches(name, pattern) for name in names):
            raise ValueError(
                f"phase {phase.name or '?'}: layer pattern {pattern!r} matches no parameter; "
                f"parameters are named like {', '.join(names[:4])}, ..."
            )
    return select(names, phase.layers, phase.exclude)


def norm_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of normalization layers (BatchNorm, GroupNorm, LayerNorm, ...).

    Algorithm 2 leaves these alone (section 4): their job is to rescale activations, and moving
    them toward the origin would shrink their variance and impair that.
    """
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_TYPES):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
    return names


def m2o_layers(model: nn.Module, exclude_norm: bool, exclude: Sequence[str]) -> list[str]:
    """Parameter names M2O moves and trains: all but norm layers (if asked) and `exclude`."""
    norms = norm_parameter_names(model) if exclude_norm else set()
    names = [name for name, _ in model.named_parameters() if name not in norms]
    return select(names, ["*"], exclude)
