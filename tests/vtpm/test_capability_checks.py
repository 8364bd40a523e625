"""TPM2_GetCapability, capability by capability (Part 3 30.2, Part 2 Table 121): the exact
items returned from a given start, the count written, the ``moreData`` flag when the count
asked for cuts the list, and the handle, algorithm and property tables as the spec writes them
(the expected values here are spelled out, not read back from the engine's tables)."""

from __future__ import annotations

import pytest

from cvm.formats.tpm2.constants import TpmAlg, TpmCap, TpmCc, TpmPt, TpmRh, TpmSe
from cvm.formats.tpm2.tpm2b import reader
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.dispatch import COMMANDS
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import srk_template

# TPMA_ALGORITHM (Part 2 Table 36): asymmetric 0x1, symmetric 0x2, hash 0x4, object 0x8,
# signing 0x100, encrypting 0x200, method 0x400; as swtpm lists them
# (tests/interop/test_vtpm_capabilities.py compares the two).
ALGORITHMS = [
    (0x0001, 0x009), (0x0004, 0x004), (0x0005, 0x104), (0x0006, 0x002), (0x0008, 0x30C),
    (0x000A, 0x006), (0x000B, 0x004), (0x000C, 0x004), (0x000D, 0x004),
    (0x0014, 0x101), (0x0016, 0x101), (0x0018, 0x101), (0x0022, 0x404), (0x0023, 0x009),
    (0x0025, 0x008), (0x0043, 0x202),
]
# The properties of a TPM fresh from manufacture (DA: 3 tries, 1000 s, 1000 s).
PROPERTIES = [
    (0x100, 0x322E3000), (0x101, 0), (0x102, 159), (0x103, 1), (0x104, 2026),
    (0x105, 0x43564D00), (0x106, 0x63766D20), (0x10B, 0x00010000), (0x10C, 0),
    (0x10E, 3), (0x10F, 7), (0x110, 3), (0x111, 64), (0x112, 24), (0x117, 2048),
    (0x11C, 1024), (0x120, 64), (0x200, 0), (0x201, 0x80000007), (0x20E, 0), (0x20F, 3),
    (0x210, 1000), (0x211, 1000),
]
PERMANENT = [0x40000001, 0x40000007, 0x4000000A, 0x4000000B, 0x4000000C]  # not TPM_RS_PW


def _pairs(client: TpmClient, capability: int, first: int, count: int,
           small: bool = False) -> tuple[bool, list[tuple[int, int]]]:
    """The (id, value) items GetCapability returns, its count field read and checked against
    the bytes that follow."""
    more, data = client.get_capability(capability, first, count)
    source = reader(data, "capability")
    assert source.u32() == capability
    items = [((source.u16() if small else source.u32()), source.u32())
             for _ in range(source.u32())]
    assert source.rest() == b""
    return more, items


def _words(client: TpmClient, capability: int, first: int,
           count: int) -> tuple[bool, list[int]]:
    """The one-word items (handles, TPMA_CC) GetCapability returns, count checked."""
    more, data = client.get_capability(capability, first, count)
    source = reader(data, "capability")
    assert source.u32() == capability
    handles = [source.u32() for _ in range(source.u32())]
    assert source.rest() == b""
    return more, handles


def _handles(client: TpmClient, first: int, count: int = 64) -> tuple[bool, list[int]]:
    return _words(client, TpmCap.HANDLES, first, count)


def test_algorithms_from_each_start_and_the_more_flag(client: TpmClient) -> None:
    assert _pairs(client, TpmCap.ALGS, 0, 64, small=True) == (False, ALGORITHMS)
    assert _pairs(client, TpmCap.ALGS, 0, 1000, small=True) == (False, ALGORITHMS)
    assert _pairs(client, TpmCap.ALGS, TpmAlg.SHA256, 2, small=True) == (
        True, [(0x000B, 0x004), (0x000C, 0x004)])
    assert _pairs(client, TpmCap.ALGS, TpmAlg.SHA256 + 1, 64, small=True) == (
        False, ALGORITHMS[7:])
    assert _pairs(client, TpmCap.ALGS, TpmAlg.CFB, 1, small=True) == (False, [(0x0043, 0x202)])
    assert _pairs(client, TpmCap.ALGS, TpmAlg.CFB, 0, small=True) == (True, [])
    assert _pairs(client, TpmCap.ALGS, TpmAlg.CFB + 1, 64, small=True) == (False, [])
    assert _pairs(client, TpmCap.ALGS, 0, len(ALGORITHMS), small=True) == (False, ALGORITHMS)
    assert _pairs(client, TpmCap.ALGS, 0, len(ALGORITHMS) - 1, small=True) == (
        True, ALGORITHMS[:-1])


def test_properties_from_each_start_and_the_more_flag(client: TpmClient) -> None:
    assert _pairs(client, TpmCap.TPM_PROPERTIES, 0, 64) == (False, PROPERTIES)
    assert _pairs(client, TpmCap.TPM_PROPERTIES, TpmPt.PCR_COUNT, 2) == (
        True, [(0x112, 24), (0x117, 2048)])
    assert _pairs(client, TpmCap.TPM_PROPERTIES, TpmPt.PCR_COUNT + 1, 1) == (
        True, [(0x117, 2048)])
    assert _pairs(client, TpmCap.TPM_PROPERTIES, TpmPt.LOCKOUT_RECOVERY, 64) == (
        False, [(0x211, 1000)])
    assert _pairs(client, TpmCap.TPM_PROPERTIES, TpmPt.LOCKOUT_RECOVERY + 1, 64) == (False, [])
    assert _pairs(client, TpmCap.TPM_PROPERTIES, 0, len(PROPERTIES)) == (False, PROPERTIES)


def test_the_dictionary_attack_properties_follow_the_state(client: TpmClient,
                                                           tpm: Tpm) -> None:
    tpm.state.failed_tries, tpm.state.max_tries = 2, 9
    tpm.state.recovery_time, tpm.state.lockout_recovery = 77, 88
    assert _pairs(client, TpmCap.TPM_PROPERTIES, TpmPt.LOCKOUT_COUNTER, 64) == (
        False, [(0x20E, 2), (0x20F, 9), (0x210, 77), (0x211, 88)])


def test_handles_of_each_type_from_each_start(client: TpmClient) -> None:
    assert _handles(client, 0) == (False, list(range(24)))
    assert _handles(client, 5, 3) == (True, [5, 6, 7])
    assert _handles(client, 23, 1) == (False, [23])
    assert _handles(client, 24) == (False, [])
    assert _handles(client, 0x40000000) == (False, PERMANENT)
    assert _handles(client, 0x40000008, 2) == (True, [0x4000000A, 0x4000000B])
    assert _handles(client, 0x80000000) == (False, [])
    first, _ = client.create_primary(TpmRh.OWNER, srk_template())
    second, _ = client.create_primary(TpmRh.OWNER, srk_template())
    assert (first, second) == (0x80000000, 0x80000001)
    assert _handles(client, 0x80000000) == (False, [first, second])
    assert _handles(client, 0x80000001) == (False, [second])
    assert _handles(client, 0x80000000, 1) == (True, [first])
    client.evict_control(first, 0x81000001)
    assert _handles(client, 0x81000000) == (False, [0x81000001])
    session = client.start_auth_session(TpmSe.HMAC)
    policy = client.start_auth_session(TpmSe.POLICY)
    assert _handles(client, session.handle) == (False, [session.handle])
    assert _handles(client, policy.handle) == (False, [policy.handle])
    assert session.handle >> 24 == 0x02 and policy.handle >> 24 == 0x03


def test_commands_carry_their_handle_counts(client: TpmClient) -> None:
    codes = sorted(COMMANDS)
    more, items = _words(client, TpmCap.COMMANDS, 0, 64)
    assert not more and [value & 0xFFFF for value in items] == codes
    # TPMA_CC (Part 2 Table 38): commandIndex, cHandles at bit 25, rHandle at bit 28
    assert _words(client, TpmCap.COMMANDS, TpmCc.CREATE_PRIMARY, 1) == (
        True, [0x131 | 1 << 25 | 1 << 28])
    assert _words(client, TpmCap.COMMANDS, TpmCc.NV_UNDEFINE_SPACE, 1) == (
        True, [0x122 | 2 << 25])
    after = min(c for c in codes if c > TpmCc.CREATE_PRIMARY)
    more, items = _words(client, TpmCap.COMMANDS, TpmCc.CREATE_PRIMARY + 1, 1)
    assert more and [value & 0xFFFF for value in items] == [after]
    more, items = _words(client, TpmCap.COMMANDS, codes[-1], 64)
    assert not more and [value & 0xFFFF for value in items] == [codes[-1]]
    assert _words(client, TpmCap.COMMANDS, codes[-1] + 1, 64) == (False, [])


@pytest.mark.parametrize("count", [0, 1, 64])
def test_pcrs_never_have_more(client: TpmClient, count: int) -> None:
    more, data = client.get_capability(TpmCap.PCRS, 0, count)
    assert not more
    assert reader(data, "capability").u32() == TpmCap.PCRS
