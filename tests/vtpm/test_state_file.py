"""The vTPM state at rest: sealed to the launch, refused when tampered, truncated, rolled back
or foreign."""

from __future__ import annotations

from typing import Any

import pytest

from cvm.errors import FormatError, IntegrityError, PolicyError, UsageError
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.formats.tpm2.constants import TpmAlg, TpmNt
from cvm.formats.tpm2.nv_public import NvPublic
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import (
    STATE_KEY_FIELDS,
    DerivedKeyProvider,
    GuestPageKeyProvider,
    KeySource,
    MonotonicCounter,
    ReleasedKeyProvider,
    open_state,
    seal_state,
)

COUNTER_INDEX = 0x01500010
BUFFER, SCRATCH = 0x20000, 0x21000


def _boot(snp: Any, counter: MonotonicCounter, stored: bytes | None = None,
          seed: bytes = b"cvm svsm firmware") -> tuple[Svsm, TpmClient]:
    launched = snp.launch(seed)
    svsm = Svsm.start(launched.guest.vcpus[0], launched.secrets_gpa, counter, snp.random,
                      stored)
    svsm.grant(BUFFER, 2)
    client = TpmClient(SvsmGuest(launched.guest.vcpus[0], svsm, BUFFER, SCRATCH).tpm_execute)
    client.startup()
    return svsm, client


def _count(client: TpmClient) -> int:
    return int.from_bytes(client.nv_read(COUNTER_INDEX, 8), "big")


def test_state_survives_a_reboot_and_refuses_every_forgery(snp: Any) -> None:
    counter = MonotonicCounter()
    svsm, client = _boot(snp, counter)
    client.nv_define_space(NvPublic(COUNTER_INDEX, TpmAlg.SHA256,
                                    0x00060006 | TpmNt.COUNTER << 4, b"", 8))
    client.nv_increment(COUNTER_INDEX)
    old = svsm.seal_state()
    client.nv_increment(COUNTER_INDEX)
    current = svsm.seal_state()
    assert counter.read() == 2

    _, again = _boot(snp, counter, current)
    assert _count(again) == 2

    with pytest.raises(PolicyError, match="rollback"):
        _boot(snp, counter, old)
    flipped = bytearray(current)
    flipped[-5] ^= 0x10
    with pytest.raises(IntegrityError, match="does not authenticate"):
        _boot(snp, counter, bytes(flipped))
    header_flip = bytearray(current)
    header_flip[0x10] ^= 0x01
    with pytest.raises((IntegrityError, PolicyError)):
        _boot(snp, counter, bytes(header_flip))
    with pytest.raises(FormatError, match="truncated"):
        _boot(snp, counter, current[:-1])
    with pytest.raises(FormatError, match="truncated"):
        _boot(snp, counter, current[:20])
    with pytest.raises(IntegrityError, match="another VM"):
        _boot(snp, counter, current, seed=b"another firmware")


def test_broker_released_key_and_counter_window() -> None:
    state = PersistentState.manufacture(lambda n: b"\x01" * n).to_bytes()
    keys = ReleasedKeyProvider(b"\x42" * 32)
    counter = MonotonicCounter(7)
    sealed = seal_state(state, keys, counter, lambda n: b"\x02" * n)
    assert counter.read() == 8
    assert open_state(sealed, keys, MonotonicCounter(7)) == state  # save interrupted: +1 window
    with pytest.raises(PolicyError, match="future"):
        open_state(sealed, keys, MonotonicCounter(5))
    with pytest.raises(IntegrityError):
        open_state(sealed, ReleasedKeyProvider(b"\x43" * 32), MonotonicCounter(8))
    with pytest.raises(PolicyError):
        MonotonicCounter(3).advance(2)


def test_key_providers_refuse_a_key_that_is_not_one() -> None:
    assert ReleasedKeyProvider(b"\x01" * 32).state_key() == b"\x01" * 32
    for key in (b"", b"\x01" * 31, b"\x01" * 33):
        with pytest.raises(UsageError, match="32 bytes"):
            ReleasedKeyProvider(key).state_key()
    page = GuestPageKeyProvider(lambda: b"\x07" * 32, KeySource.BROKER_RELEASED)
    assert page.state_key() == b"\x07" * 32
    for key in (bytes(32), b"\x07" * 31, b"\x07" * 33):
        with pytest.raises(UsageError, match="no state key"):
            GuestPageKeyProvider(lambda k=key: k, KeySource.BROKER_RELEASED).state_key()


def test_the_derived_state_key_is_asked_for_vmpl0_with_measurement_and_policy() -> None:
    asked: list[KeyRequest] = []

    def derive(request: KeyRequest) -> bytes:
        asked.append(request)
        return b"\x33" * 32

    DerivedKeyProvider(derive).state_key()
    assert asked == [KeyRequest(guest_field_select=STATE_KEY_FIELDS, vmpl=0)]
    assert STATE_KEY_FIELDS == GuestFieldSelect.MEASUREMENT | GuestFieldSelect.GUEST_POLICY
