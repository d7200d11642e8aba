"""Reading YAML and TOML configuration files into plain mappings."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml


def read_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a `.yaml`, `.yml` or `.toml` file.

    Raises ValueError naming the file and the problem (unknown extension, syntax error, or a
    top level that is not a mapping).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"cannot read {str(path)!r}: {error.strerror}") from error
    try:
        if suffix in {".yaml", ".yml"}:
            content = yaml.safe_load(text)
        elif suffix == ".toml":
            content = tomllib.loads(text)
        else:
            raise ValueError(
                f"{str(path)!r}: unknown file type {suffix!r}; use .yaml, .yml or .toml"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid {suffix[1:].upper()}: {error}") from error
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(
            f"{str(path)!r} must hold a mapping of settings, not {type(content).__name__}"
        )
    return content
