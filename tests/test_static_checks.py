"""The layers and the types are checked, not hoped for: import contracts and mypy, as tests.

Both read their configuration from pyproject.toml (``[tool.importlinter]``, ``[tool.mypy]``)
and run from this interpreter's environment (the dev extras), in the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600  # mypy without its cache (a fresh clone): 7 s on 2 cores, 26 s under load


def _check(command: list[str]) -> None:
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}", pytrace=False
        )


def test_import_contracts_hold() -> None:
    """domain -> nothing, tasks -> domain, worker -> both; the runtime never loads dev tools."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.fail(f"{lint_imports} is missing: pip install -e '.[dev]'", pytrace=False)
    _check([str(lint_imports)])


def test_types_check() -> None:
    _check([sys.executable, "-m", "mypy"])
