"""The vTPM engine's own checks, one by one: the locality a command runs at when none is
given, the handles it takes before the command sees them, and the transient slots it hands
out."""

from __future__ import annotations

import struct

from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmSt, TpmSu
from cvm.formats.tpm2.pcr_selection import PcrSelection, PcrSelectionList
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm

from .conftest import FakeClock, seeded_random

# The engine's own door, taken before the tests' autouse wrapper (conftest's
# ``changed_is_complete``) replaces it with one that always passes a locality.
EXECUTE = Tpm.execute


def _startup(kind: int = TpmSu.CLEAR) -> bytes:
    return struct.pack(">HIIH", TpmSt.NO_SESSIONS, 12, TpmCc.STARTUP, kind)


def _pcr0(tpm: Tpm) -> bytes:
    client = TpmClient(tpm.execute, random=seeded_random(b"client"))
    _, _, values = client.pcr_read(PcrSelectionList((PcrSelection.of(TpmAlg.SHA256, (0,)),)))
    return values[0]


def test_a_command_given_no_locality_runs_at_locality_0() -> None:
    tpm = Tpm(random=seeded_random(b"engine"), clock=FakeClock())
    assert EXECUTE(tpm, _startup()) == struct.pack(">HII", TpmSt.NO_SESSIONS, 10, 0)
    assert _pcr0(tpm) == bytes(32)  # PCR 0 ends in the Startup's locality (Part 1 34.3)
    other = Tpm(random=seeded_random(b"engine"), clock=FakeClock())
    other.execute(_startup(), 3)
    assert _pcr0(other) == bytes(31) + b"\x03"
