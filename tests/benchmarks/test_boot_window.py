"""The boot benchmark's breakdown covers launch to workload running: the trace is left out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from boot import _until_the_workload
from cvm.guest.vm import GuestVm


def test_the_trace_after_the_workload_is_skipped_and_restored() -> None:
    original = GuestVm.finish
    with _until_the_workload():
        assert GuestVm.finish is not original
        assert GuestVm.finish(None) is None  # type: ignore[arg-type]  # reads nothing
    assert GuestVm.finish is original
    with pytest.raises(RuntimeError), _until_the_workload():
        raise RuntimeError("a failed boot")
    assert GuestVm.finish is original
