"""The import direction of the design: orchestrator -> workers -> llpf_core, core free of Ray."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    command = shutil.which("lint-imports")
    assert command, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
