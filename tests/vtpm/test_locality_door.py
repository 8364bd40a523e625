"""Localities 0–4 and the extended 32–255 exist (TPMA_LOCALITY); a command at any other
locality is refused at the door, before it can be recorded (creation data, PCR rules)."""

from __future__ import annotations

import pytest

from cvm.formats.tpm2.command import Command
from cvm.formats.tpm2.constants import TpmCc
from cvm.formats.tpm2.response_code import TpmRc
from cvm.formats.tpm2.tpm2b import writer
from cvm.vtpm.engine import Tpm

GET_RANDOM = Command(TpmCc.GET_RANDOM, (), (), writer().u16(8).to_bytes()).to_bytes()


@pytest.fixture
def started() -> Tpm:
    tpm = Tpm()
    startup = Command(TpmCc.STARTUP, (), (), writer().u16(0).to_bytes()).to_bytes()
    assert tpm.execute(startup)[6:10] == bytes(4)
    return tpm


@pytest.mark.parametrize("locality", [0, 1, 2, 3, 4, 32, 200, 255])
def test_commands_run_at_the_localities_that_exist(started: Tpm, locality: int) -> None:
    assert started.execute(GET_RANDOM, locality)[6:10] == bytes(4)


@pytest.mark.parametrize("locality", [5, 6, 17, 31, 256, -1])
def test_other_localities_are_refused(started: Tpm, locality: int) -> None:
    response = started.execute(GET_RANDOM, locality)
    assert int.from_bytes(response[6:10], "big") == TpmRc.LOCALITY
