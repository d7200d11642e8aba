"""Model architectures of the paper and the registry that names them.

`build_model("resnet18", num_classes=10)` builds a registered architecture; a user's own model is
accepted as `"package.module:factory"`, where `factory(num_classes=...)` returns an `nn.Module`.
Parameter names are stable across constructions, so that phase patterns (Table 2) address them.
"""

from __future__ import annotations

from llpf_core.models.registry import (
    ARCHITECTURES,
    ArchitectureError,
    ArchSpec,
    architecture_names,
    build_model,
    get_arch,
    parameter_count,
)

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "ArchitectureError",
    "architecture_names",
    "build_model",
    "get_arch",
    "parameter_count",
]
