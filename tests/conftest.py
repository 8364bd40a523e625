"""Shared fixtures: the vectors folder and real external tools.

A missing vector folder or tool skips a test on a developer's machine and fails it in CI
(``CI=true``), where .ci/run installs everything the tests need.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VECTORS = PROJECT_ROOT.parent / "shared" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is missing in CI; .ci/run must provide it")
    pytest.skip(f"{what} is not available on this machine")


@pytest.fixture(scope="session")
def vectors() -> Path:
    """``../shared/vectors`` from the project root (real data with provenance)."""
    if not VECTORS.is_dir():
        _missing(f"the vectors folder {VECTORS}")
    return VECTORS


def find_tool(name: str) -> str:
    """The path of a real tool, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )
    if path is None:
        _missing(f"the tool {name}")
        raise AssertionError("unreachable")
    return path


@pytest.fixture(scope="session")
def require_tool() -> object:
    """``require_tool("cryptsetup")`` gives the tool's path, or skips (fails in CI)."""
    return find_tool
