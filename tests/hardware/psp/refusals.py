"""The PSP's refusals as the tests expect them: a status and one line naming the command and why."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import StatusError
from cvm.hardware.psp.status import SevStatus


def refused(call: Callable[[], object], status: SevStatus, command: str, reason: str) -> None:
    """``call`` fails with ``status`` and the one-line message naming the command and why."""
    with pytest.raises(StatusError) as refusal:
        call()
    assert refusal.value.code == status
    assert str(refusal.value) == f"{command} failed with {status.name} ({status:#x}): {reason}"
